//! `docker-etcd-register list`: what is registered across the cluster, read
//! from etcd and printed as a table or JSON; with `--watch`, printed again
//! whenever it changes (the informer applies the watch's changes; nothing is
//! read again). Reads only; writes nothing.

use std::cell::Cell;
use std::future::Future;
use std::io::{BufWriter, Write as _};

use anyhow::Context as _;

use crate::config::ListConfig;
use crate::etcd::RecordsReader;
use crate::informer::{self, Informer, Source};
use crate::listing::{self, admit, Admission, Index, JsonRows, Row, Unreadable, Unreadables};
use crate::store::RecordSource;

/// Prints the list once, or with `--watch` until `shutdown`.
pub async fn run(config: ListConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut reader = RecordsReader::new(&config.etcd.endpoints, config.etcd.security.clone());
    let source = Source {
        root: &config.root,
        prefix: &config.read_prefix,
        filter: &config.filter,
    };
    let reading = || format!("reading {} from etcd", config.read_prefix);
    if !config.watch {
        if config.json {
            return stream_json(&mut reader, &source).await;
        }
        let listing = informer::read(&mut reader, &source)
            .await
            .with_context(reading)?;
        listing::warn_unreadable(&listing.index.unreadables());
        return write(&listing::table(listing.index.rows()));
    }
    tokio::pin!(shutdown);
    let follow = async {
        let mut informer = Informer::start(reader, source).await;
        loop {
            let index = informer.index();
            listing::warn_unreadable(&index.unreadables());
            write(&watched(&config, index, informer.revision()))?;
            informer.next_update().await;
        }
    };
    tokio::select! {
        result = follow => result,
        () = &mut shutdown => Ok(()),
    }
}

/// The whole list as `--watch` prints it after each change.
fn watched(config: &ListConfig, index: &Index, revision: i64) -> String {
    if config.json {
        listing::json(index.rows())
    } else {
        format!(
            "# etcd revision {revision}\n{}\n",
            listing::table(index.rows())
        )
    }
}

fn write(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

/// Why a streamed list stopped short.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("writing to stdout")]
    Write(#[source] std::io::Error),
    #[error(
        "etcd compacted the revision being read after rows were printed; \
         the output is incomplete: run the command again"
    )]
    Restarted,
}

/// `list --json` without `--watch`: each page's rows are printed as it
/// arrives, in etcd's key order, so that a million records are printed in
/// the memory of one page. A read that etcd makes start over (a compaction
/// in the middle of it) cannot take back rows already printed: the command
/// fails then instead. An etcd failure midway leaves the array unclosed, and
/// the exit code says so.
async fn stream_json(reader: &mut impl RecordSource, source: &Source<'_>) -> anyhow::Result<()> {
    // Whether an attempt of the read printed a row: a later attempt (after
    // a compaction) must not print a second list after part of one.
    let printed = Cell::new(false);
    let start = || Stream {
        out: JsonRows::new(BufWriter::new(std::io::stdout().lock())),
        unreadable: Unreadables::default(),
        restarted: printed.get(),
    };
    let fold = |stream: &mut Stream<'_>, entry: crate::store::paging::Entry<'_>| {
        if stream.restarted {
            return;
        }
        match admit(source.root, source.filter, entry.key, entry.value) {
            Admission::Record(record) => {
                let place = (record.host, &record.service, &record.container, entry.key);
                for binding in &record.bindings {
                    stream.out.row(&Row::of(place, binding));
                }
                printed.set(true);
            }
            Admission::Unreadable(problem) => stream.unreadable.add(Unreadable {
                key: entry.key.to_owned(),
                problem,
            }),
            Admission::Skipped => {}
        }
    };
    let read = reader
        .read(source.prefix, start, fold)
        .await
        .with_context(|| format!("reading {} from etcd", source.prefix))?;
    let stream = read.content;
    if stream.restarted {
        return Err(StreamError::Restarted.into());
    }
    listing::warn_unreadable(&stream.unreadable);
    stream
        .out
        .finish()
        .and_then(|mut out| out.flush())
        .map_err(StreamError::Write)?;
    Ok(())
}

/// The state of a streamed list.
struct Stream<'a> {
    /// The JSON array being written.
    out: JsonRows<BufWriter<std::io::StdoutLock<'a>>>,
    /// The keys that are no records, said after the rows.
    unreadable: Unreadables,
    /// Whether the read started over: nothing more is printed.
    restarted: bool,
}
