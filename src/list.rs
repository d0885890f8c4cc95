//! `docker-etcd-register list`: what is registered across the cluster, read
//! from etcd and printed as a table or JSON; with `--watch`, printed again
//! whenever it changes. Reads only; writes nothing.

use std::future::Future;
use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::FutureExt as _;
use tracing::{info, warn};

use crate::config::ListConfig;
use crate::etcd::{PrefixWatch, RecordsReader, StoreError};
use crate::listing::{self, Row, Rows, Unreadables};

/// Pause before reading again after etcd failed during `--watch`.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// Prints the list once, or with `--watch` until `shutdown`.
pub async fn run(config: ListConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut reader = RecordsReader::new(&config.etcd.endpoints, config.etcd.security.clone());
    let prefix = config.read_prefix.clone();
    if !config.watch {
        let listing = read(&config, &mut reader)
            .await
            .with_context(|| format!("reading {prefix} from etcd"))?;
        return print(&config, listing, false);
    }
    tokio::pin!(shutdown);
    tokio::select! {
        result = watch(&config, &mut reader, &prefix) => result,
        () = &mut shutdown => Ok(()),
    }
}

/// Prints the list, then again after every change; survives etcd outages.
async fn watch(
    config: &ListConfig,
    reader: &mut RecordsReader,
    prefix: &str,
) -> anyhow::Result<()> {
    let mut failing = false;
    loop {
        match read_and_watch(config, reader, prefix).await {
            Ok((listing, mut changes)) => {
                if std::mem::take(&mut failing) {
                    info!("etcd answers again");
                }
                print(config, listing, true)?;
                // Any change: read the whole prefix again (level-triggered,
                // so nothing is ever patched wrongly), after taking every
                // change that is already waiting.
                let ended = match changes.next_changes().await {
                    Ok(_) => drain(&mut changes).await,
                    Err(error) => Some(error),
                };
                if let Some(error) = ended {
                    failing = report(failing, &error);
                    tokio::time::sleep(WATCH_RETRY).await;
                }
            }
            Err(error) => {
                failing = report(failing, &error);
                tokio::time::sleep(WATCH_RETRY).await;
            }
        }
    }
}

/// What one read of the root shows.
struct Listing {
    /// The rows to print, sorted.
    rows: Vec<Row>,
    /// The keys that are no records, reported on stderr.
    unreadable: Unreadables,
    /// The revision it was read at: `--watch` prints it and follows from it.
    revision: i64,
}

/// Reads the records page by page, keeping only the rows it will print.
async fn read(config: &ListConfig, reader: &mut RecordsReader) -> Result<Listing, StoreError> {
    let read = reader
        .read(
            &config.read_prefix,
            || Rows::new(&config.root, &config.filter),
            |rows, entry| rows.add(entry.key, entry.value),
        )
        .await?;
    let (rows, unreadable) = read.content.finish();
    Ok(Listing {
        rows,
        unreadable,
        revision: read.revision,
    })
}

async fn read_and_watch(
    config: &ListConfig,
    reader: &mut RecordsReader,
    prefix: &str,
) -> Result<(Listing, PrefixWatch), StoreError> {
    let listing = read(config, reader).await?;
    let changes = reader.watch(prefix, listing.revision + 1).await?;
    Ok((listing, changes))
}

/// Takes the changes that are already waiting; the error if the watch broke.
async fn drain(changes: &mut PrefixWatch) -> Option<StoreError> {
    loop {
        match changes.next_changes().now_or_never() {
            None => return None,
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Some(error),
        }
    }
}

/// One warning when etcd starts failing, not one per retry.
fn report(already_failing: bool, error: &StoreError) -> bool {
    if !already_failing {
        warn!(error = %error, "cannot read etcd; retrying");
    }
    true
}

fn print(config: &ListConfig, listing: Listing, watching: bool) -> anyhow::Result<()> {
    let Listing {
        rows,
        unreadable,
        revision,
    } = listing;
    for skipped in &unreadable.named {
        warn!(
            key = skipped.key,
            problem = skipped.problem,
            "not a record; skipped"
        );
    }
    if unreadable.count > unreadable.named.len() {
        warn!(
            more = unreadable.count - unreadable.named.len(),
            total = unreadable.count,
            "more keys that are not records; skipped"
        );
    }
    let text = if config.json {
        format!("{}\n", listing::json(&rows))
    } else if watching {
        format!("# etcd revision {revision}\n{}\n", listing::table(&rows))
    } else {
        listing::table(&rows)
    };
    // The rows are no longer needed while the text is written.
    drop(rows);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}
