//! Following every host's records, for the consumers (`list --watch`,
//! `render`): read the records in pages, hand them over, wait until they
//! change, read again — level-triggered, so nothing is ever patched wrongly.
//! An etcd outage is retried every second and said once when it starts and
//! once when it ends. Any `store::RecordSource` will do: etcd, or the
//! simulator's cluster in the consumers' tests.

use std::time::Duration;

use tracing::{info, warn};

use crate::listing::{Filter, Row, Rows, Unreadables};
use crate::store::{RecordSource, StoreError};

/// Pause before reading again after etcd failed.
const RETRY: Duration = Duration::from_secs(1);

/// Where the records to follow are.
pub struct Source<'a> {
    /// The root of all keys, with its trailing `/`.
    pub root: &'a str,
    /// What to read under it: the root, or one host's prefix.
    pub prefix: &'a str,
    /// Which records become rows.
    pub filter: &'a Filter,
}

/// What one read of the records shows.
pub struct Listing {
    /// The rows the filter admits, sorted.
    pub rows: Vec<Row>,
    /// The keys that are no records.
    pub unreadable: Unreadables,
    /// The revision it was read at.
    pub revision: i64,
}

/// Reads the records page by page, keeping only the rows the filter admits.
pub async fn read(
    reader: &mut impl RecordSource,
    source: &Source<'_>,
) -> Result<Listing, StoreError> {
    let read = reader
        .read(
            source.prefix,
            || Rows::new(source.root, source.filter),
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

/// Reads and hands the listing to `show`, then waits for `settle` to say
/// that the records changed (it gets the watch from right after the read),
/// and again, surviving etcd outages. Returns only when `show` fails.
pub async fn follow<R: RecordSource, E>(
    reader: &mut R,
    source: &Source<'_>,
    mut show: impl AsyncFnMut(Listing) -> Result<(), E>,
    mut settle: impl AsyncFnMut(&mut R::Watch) -> Result<(), StoreError>,
) -> E {
    let mut failing = false;
    loop {
        let outcome = match read_and_watch(reader, source).await {
            Ok((listing, mut watch)) => {
                if std::mem::take(&mut failing) {
                    info!("etcd answers again");
                }
                if let Err(error) = show(listing).await {
                    return error;
                }
                settle(&mut watch).await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            if !failing {
                warn!(error = %error, "cannot read etcd; retrying");
                failing = true;
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

async fn read_and_watch<R: RecordSource>(
    reader: &mut R,
    source: &Source<'_>,
) -> Result<(Listing, R::Watch), StoreError> {
    let listing = read(reader, source).await?;
    let watch = reader.watch(source.prefix, listing.revision + 1).await?;
    Ok((listing, watch))
}
