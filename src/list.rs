//! `docker-etcd-register list`: what is registered across the cluster, read
//! from etcd and printed as a table or JSON; with `--watch`, printed again
//! whenever it changes. Reads only; writes nothing.

use std::future::Future;
use std::io::Write as _;

use anyhow::Context as _;
use futures_util::FutureExt as _;

use crate::config::ListConfig;
use crate::etcd::{PrefixWatch, RecordsReader, StoreError};
use crate::follow::{self, Listing, Source};
use crate::listing;

/// Prints the list once, or with `--watch` until `shutdown`.
pub async fn run(config: ListConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut reader = RecordsReader::new(&config.etcd.endpoints, config.etcd.security.clone());
    let source = Source {
        root: &config.root,
        prefix: &config.read_prefix,
        filter: &config.filter,
    };
    if !config.watch {
        let listing = follow::read(&mut reader, &source)
            .await
            .with_context(|| format!("reading {} from etcd", config.read_prefix))?;
        return print(&config, listing, false);
    }
    let show = async |listing: Listing| print(&config, listing, true);
    tokio::pin!(shutdown);
    tokio::select! {
        error = follow::follow(&mut reader, &source, show, next_changes) => Err(error),
        () = &mut shutdown => Ok(()),
    }
}

/// Any change: every change that is already waiting with it, so that a
/// burst is printed once.
async fn next_changes(changes: &mut PrefixWatch) -> Result<(), StoreError> {
    changes.next_changes().await?;
    loop {
        match changes.next_changes().now_or_never() {
            None => return Ok(()),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error),
        }
    }
}

fn print(config: &ListConfig, listing: Listing, watching: bool) -> anyhow::Result<()> {
    let Listing {
        rows,
        unreadable,
        revision,
    } = listing;
    listing::warn_unreadable(&unreadable);
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
