//! The consumers' seam (`store::RecordSource`) on the simulated cluster: what
//! `list` and `render` read through `follow`, with the etcd adapter's
//! paging and the connection faults of one client, so that the consumers
//! run against hostile records and outages without a real etcd.

use tokio::sync::mpsc;

use super::cluster::Cluster;
use super::store::{reach_then, SimWatch};
use crate::store::paging::{self, Entry, PageFailure, PageRequest, PrefixRead};
use crate::store::{RecordSource, StoreError};

/// One consumer's connection to the cluster.
pub struct SimRecords {
    cluster: Cluster,
    /// The connection slot: whose faults apply.
    client: usize,
}

impl SimRecords {
    pub fn new(cluster: Cluster, client: usize) -> Self {
        Self { cluster, client }
    }
}

/// Why a page of a read failed: the connection, or the page itself.
enum PageError {
    Store(StoreError),
    Page(PageFailure),
}

/// `prefix` read in pages as the etcd adapter reads it, through `client`'s
/// connection; and how many requests it took.
pub async fn read_pages<T>(
    cluster: &Cluster,
    client: usize,
    prefix: &str,
    start: impl Fn() -> T,
    fold: impl FnMut(&mut T, Entry<'_>),
) -> Result<(PrefixRead<T>, usize), StoreError> {
    let mut pages = 0;
    let fetch = async |request: PageRequest<'_>| {
        pages += 1;
        match reach_then(cluster, client, |c| Ok(c.range(&request))).await {
            Ok(Ok(page)) => Ok(page),
            Ok(Err(failure)) => Err(PageError::Page(failure)),
            Err(error) => Err(PageError::Store(error)),
        }
    };
    let classify = |error: &PageError| match error {
        PageError::Page(failure) => *failure,
        PageError::Store(_) => PageFailure::Other,
    };
    let read = paging::read_prefix(prefix, start, fold, fetch, classify)
        .await
        .map_err(|error| match error {
            PageError::Store(error) => error,
            PageError::Page(failure) => {
                StoreError::Failed(format!("range read failed: {failure:?}"))
            }
        })?;
    Ok((read, pages))
}

/// A watch of `prefix` from `revision` through `client`'s connection, and
/// whether that revision was compacted: then the watch ends at once, as
/// etcd cancels it.
pub async fn watch(
    cluster: &Cluster,
    client: usize,
    prefix: &str,
    revision: i64,
) -> Result<(SimWatch, bool), StoreError> {
    let watch = reach_then(cluster, client, |c| Ok(c.watch(client, prefix, revision))).await?;
    let compacted = watch.is_none();
    let changes = watch.unwrap_or_else(|| {
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = sender.send(Err(StoreError::StreamEnded("watch")));
        receiver
    });
    Ok((SimWatch::new(changes), compacted))
}

impl RecordSource for SimRecords {
    type Watch = SimWatch;

    async fn read<T>(
        &mut self,
        prefix: &str,
        start: impl Fn() -> T,
        fold: impl FnMut(&mut T, Entry<'_>),
    ) -> Result<PrefixRead<T>, StoreError> {
        Ok(read_pages(&self.cluster, self.client, prefix, start, fold)
            .await?
            .0)
    }

    async fn watch(&mut self, prefix: &str, revision: i64) -> Result<SimWatch, StoreError> {
        Ok(watch(&self.cluster, self.client, prefix, revision).await?.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::sleep;

    use super::*;
    use crate::follow::{self, Listing, Source};
    use crate::listing::Filter;
    use crate::sim::cluster::{Actor, Reach, Write};
    use crate::store::PrefixChanges;

    const ROOT: &str = "/registered/";

    fn put(cluster: &Cluster, key: &str, value: &str) {
        let write = Write::Put(key.to_owned(), value.as_bytes().to_vec());
        cluster.txn(Actor::Foreign, &[write], 0, None).unwrap();
    }

    /// A record of container `id` (a hex digit) on host `10.0.0.<n>`.
    fn record(cluster: &Cluster, n: u8, id: char) -> String {
        let id = id.to_string().repeat(64);
        let key = format!("{ROOT}10.0.0.{n}/web/{id}");
        put(
            cluster,
            &key,
            &format!(
                r#"[{{"container":"{id}","image":"web:1","ip":"10.0.0.{n}","public_port":"8080","private_port":"80","port_type":"tcp"}}]"#
            ),
        );
        key
    }

    fn keys(listing: &Listing) -> Vec<String> {
        listing.rows.iter().map(|row| row.key.clone()).collect()
    }

    /// `follow` on the simulated cluster: hostile keys beside a record are
    /// counted, never rows; a change is a new listing; an outage breaks the
    /// watch and is survived, the records written meanwhile read after it.
    #[tokio::test(start_paused = true)]
    async fn follow_skips_hostile_records_and_survives_an_outage() {
        let cluster = Cluster::new();
        let a = record(&cluster, 1, 'a');
        let id = "b".repeat(64);
        for (key, value) in [
            (format!("{ROOT}10.0.0.1/we\nb/{id}"), "[]".to_owned()),
            (
                format!("{ROOT}10.0.0.1/web/{id}"),
                format!(
                    r#"[{{"container":"{id}","image":"web:1","ip":"127.0.0.1","public_port":"1","private_port":"80","port_type":"tcp"}}]"#
                ),
            ),
            (format!("{ROOT}10.0.0.1/web"), "x".to_owned()),
        ] {
            put(&cluster, &key, &value);
        }
        let filter = Filter::default();
        let source = Source {
            root: ROOT,
            prefix: ROOT,
            filter: &filter,
        };
        let mut listings = Vec::new();
        let show = async |listing: Listing| {
            listings.push(listing);
            if listings.len() == 3 {
                Err(())
            } else {
                Ok(())
            }
        };
        let settle = async |watch: &mut SimWatch| watch.next_changes().await.map(|_| ());
        let mut records = SimRecords::new(cluster.clone(), 0);
        let written = async {
            sleep(Duration::from_secs(1)).await;
            let b = record(&cluster, 2, 'c');
            sleep(Duration::from_secs(1)).await;
            cluster.add_reach(0, 1, Reach::Refused);
            sleep(Duration::from_secs(5)).await;
            let c = record(&cluster, 3, 'd');
            cluster.heal(1);
            (b, c)
        };
        let (ended, (b, c)) =
            tokio::join!(follow::follow(&mut records, &source, show, settle), written);
        assert_eq!(ended, ());
        assert_eq!(keys(&listings[0]), std::slice::from_ref(&a));
        assert_eq!(listings[0].unreadable.count, 3);
        assert_eq!(keys(&listings[1]), [a.clone(), b.clone()]);
        assert_eq!(keys(&listings[2]), [a, b, c]);
    }
}
