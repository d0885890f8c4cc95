//! The consumers' seam (`store::RecordSource`) on the simulated cluster: what
//! `list` and `render` read through the informer, with the etcd adapter's
//! paging and the connection faults of one client, so that the consumers
//! run against hostile records and outages without a real etcd.

use std::cell::Cell;
use std::rc::Rc;

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
    /// How many range requests it made, shared with the test that looks.
    ranges: Rc<Cell<usize>>,
}

impl SimRecords {
    pub fn new(cluster: Cluster, client: usize) -> Self {
        Self {
            cluster,
            client,
            ranges: Rc::default(),
        }
    }

    /// The count of its range requests, which a test keeps after the
    /// consumer took the connection.
    pub fn ranges(&self) -> Rc<Cell<usize>> {
        self.ranges.clone()
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
        let _ = sender.send(Err(StoreError::WatchCompacted(revision)));
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
        let (read, pages) = read_pages(&self.cluster, self.client, prefix, start, fold).await?;
        self.ranges.set(self.ranges.get() + pages);
        Ok(read)
    }

    async fn watch(&mut self, prefix: &str, revision: i64) -> Result<SimWatch, StoreError> {
        Ok(watch(&self.cluster, self.client, prefix, revision).await?.0)
    }
}
