//! Range reads as etcd answers them: at the newest or a past revision (from
//! the history since the last compaction), limited in keys, and refused when
//! the response would exceed the client's decoding limit.

use std::collections::BTreeMap;

use super::{Cluster, Kv, MAX_REQUEST_BYTES};
use crate::store::paging::{Page, PageFailure, PageRequest, RawEntry};

/// The client's decoding limit, scaled down with the request limit: the
/// adapter accepts responses of 64 MiB against etcd's 1.5 MiB requests;
/// here, ten of the largest values, so that schedules still reach a page
/// refused as too large.
pub const MAX_RESPONSE_BYTES: usize = 10 * MAX_REQUEST_BYTES;

/// One page of a range read.
pub struct SimPage {
    /// The cluster's revision when it answered (as etcd's response header
    /// has it, even for a read at a past revision).
    revision: i64,
    /// Keys remain after the limit.
    more: bool,
    kvs: Vec<(String, Kv)>,
}

impl Page for SimPage {
    fn revision(&self) -> i64 {
        self.revision
    }

    fn more(&self) -> bool {
        self.more
    }

    fn entries(&self) -> impl Iterator<Item = RawEntry<'_>> {
        self.kvs.iter().map(|(key, kv)| RawEntry {
            key: key.as_bytes(),
            value: &kv.value,
            lease: kv.lease,
        })
    }
}

impl Cluster {
    /// The keys of `request`'s range as they were at its revision (`0`: the
    /// newest), at most `limit` of them.
    pub fn range(&self, request: &PageRequest<'_>) -> Result<SimPage, PageFailure> {
        let state = self.lock();
        let at = match request.revision {
            0 => state.revision,
            revision if revision < state.compacted => return Err(PageFailure::Compacted),
            revision if revision > state.revision => return Err(PageFailure::Other),
            revision => revision,
        };
        // `[0]` as the end: every key from `from` on.
        let unbounded = request.end == [0];
        let in_range = |key: &str| {
            key.as_bytes() >= request.from && (unbounded || key.as_bytes() < request.end)
        };
        let from = String::from_utf8_lossy(request.from).into_owned();
        let mut kvs: BTreeMap<String, Kv> = state
            .kv
            .range(from..)
            .take_while(|(key, _)| in_range(key))
            .map(|(key, kv)| (key.clone(), kv.clone()))
            .collect();
        // Undo what happened after `at`, newest first.
        let later = state.history.iter().rev();
        for past in later.take_while(|past| past.change.revision > at) {
            if !in_range(&past.change.key) {
                continue;
            }
            match &past.previous {
                Some(kv) => kvs.insert(past.change.key.clone(), kv.clone()),
                None => kvs.remove(&past.change.key),
            };
        }
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX).max(1);
        let more = kvs.len() > limit;
        let kvs: Vec<(String, Kv)> = kvs.into_iter().take(limit).collect();
        let bytes: usize = kvs.iter().map(|(key, kv)| key.len() + kv.value.len()).sum();
        if bytes > MAX_RESPONSE_BYTES {
            return Err(PageFailure::TooLarge);
        }
        Ok(SimPage {
            revision: state.revision,
            more,
            kvs,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{Actor, Cluster, Write};
    use super::*;
    use crate::store::paging::{self, Entry};

    fn put(cluster: &Cluster, key: &str, bytes: usize) {
        let write = Write::Put(key.to_owned(), vec![b'v'; bytes]);
        cluster.txn(Actor::Foreign, &[write], 0, None).unwrap();
    }

    /// Reads `/p/` in pages; `between` runs before every page but the first.
    async fn read(
        cluster: &Cluster,
        mut between: impl FnMut(&Cluster),
    ) -> Result<(BTreeMap<String, usize>, i64, usize), PageFailure> {
        let mut requests = 0;
        let fetch = async |request: PageRequest<'_>| {
            if request.revision != 0 {
                between(cluster);
            }
            requests += 1;
            cluster.range(&request)
        };
        let fold = |keys: &mut BTreeMap<String, usize>, entry: Entry<'_>| {
            keys.insert(entry.key.to_owned(), entry.value.len());
        };
        let read = paging::read_prefix("/p/", BTreeMap::new, fold, fetch, |f| *f).await?;
        Ok((read.content, read.revision, requests))
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_prefix_is_read_whole_in_pages_that_fit() {
        let cluster = Cluster::new();
        for i in 0..40 {
            put(&cluster, &format!("/p/{i:02}"), MAX_REQUEST_BYTES / 2);
        }
        put(&cluster, "/q/beside", 1);
        let (keys, revision, requests) = read(&cluster, |_| {}).await.unwrap();
        assert_eq!(keys.len(), 40);
        assert!(keys.values().all(|bytes| *bytes == MAX_REQUEST_BYTES / 2));
        assert_eq!(revision, cluster.lock().revision);
        assert!(requests > 3, "pages refused as too large, then smaller");
    }

    #[tokio::test(start_paused = true)]
    async fn pages_are_pinned_to_the_revision_of_the_first() {
        let cluster = Cluster::new();
        for i in 0..40 {
            put(&cluster, &format!("/p/{i:02}"), 10);
        }
        let before = cluster.lock().revision;
        let mut added = 0;
        let (keys, revision, _) = read(&cluster, |cluster| {
            added += 1;
            put(cluster, &format!("/p/{:02}", 100 + added), 10);
            let last = Write::Delete("/p/39".to_owned());
            let _ = cluster.txn(Actor::Foreign, &[last], 0, None);
        })
        .await
        .unwrap();
        assert_eq!(revision, before);
        assert_eq!(keys.len(), 40, "as at the first page: {keys:?}");
        assert!(keys.contains_key("/p/39"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_compaction_while_paging_starts_the_read_again() {
        let cluster = Cluster::new();
        for i in 0..40 {
            put(&cluster, &format!("/p/{i:02}"), 10);
        }
        let mut compactions = 0;
        let (keys, revision, _) = read(&cluster, |cluster| {
            if compactions == 0 {
                compactions += 1;
                put(cluster, "/p/late", 10);
                cluster.compact();
            }
        })
        .await
        .unwrap();
        assert_eq!(keys.len(), 41, "read again after the compaction");
        assert_eq!(revision, cluster.lock().revision);
    }
}
