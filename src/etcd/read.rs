//! The read side of the etcd adapter: a prefix read in pages pinned to one
//! revision (used by the agent's `Etcd::observe` and by `list`'s
//! [`RecordsReader`]), and the watch on a prefix.

use etcd_client::{EventType, GetOptions, WatchOptions, WatchStream};
use tonic::Code;
use tracing::debug;

use super::paging::{self, PageSize};
use super::{Change, Connection, StoreError};
use crate::config::EtcdSecurity;
use crate::plan::LeaseId;

/// The largest range or watch response we accept (the gRPC decoding limit;
/// tonic's default is 4 MiB). One key-value can be as large as the cluster's
/// `--max-request-bytes` (1.5 MiB by default; etcd warns above 10 MiB), and
/// a page must be able to hold one, so: 16 MiB. It costs nothing when unused:
/// tonic refuses a larger response by its length prefix, before buffering
/// it, and the page is then asked for again with half the keys. Pages
/// normally stay near `paging::TARGET_PAGE_BYTES` (1 MiB).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How often a paged read starts again because etcd compacted the revision
/// its first page was read at; compactions are minutes apart, so a second
/// attempt normally succeeds.
const MAX_READ_ATTEMPTS: usize = 3;

impl Connection {
    /// Every key (that is UTF-8) under `prefix` and its value, folded into
    /// what `start` makes, read in pages of one consistent revision, which is
    /// returned. Only one page is in memory at a time, besides what `fold`
    /// keeps.
    ///
    /// Each page is a range from the key after the previous page's last
    /// key to the end of the prefix, limited in keys (sized by
    /// [`PageSize`]) and pinned to the revision of the first page. A page
    /// over [`MAX_RESPONSE_BYTES`] is asked for again with half the keys; if
    /// etcd compacted that revision meanwhile, the read starts over.
    pub(super) async fn read_prefix<T>(
        &mut self,
        prefix: &str,
        start: impl Fn() -> T,
        mut fold: impl FnMut(&mut T, Entry<'_>),
    ) -> Result<PrefixRead<T>, StoreError> {
        let end = paging::prefix_end(prefix.as_bytes());
        let mut attempt = 1;
        'read: loop {
            let mut content = start();
            let mut size = PageSize::first();
            let mut from = prefix.as_bytes().to_vec();
            // 0: the newest revision, for the first page.
            let mut revision = 0;
            loop {
                let options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(size.keys())
                    .with_revision(revision);
                let mut kv = self
                    .client()
                    .await?
                    .kv_client()
                    .max_decoding_message_size(MAX_RESPONSE_BYTES);
                let page = match kv.get(from.as_slice(), Some(options)).await {
                    Ok(page) => page,
                    Err(error) => match page_failure(&error) {
                        PageFailure::TooLarge if size.halve() => {
                            debug!(keys = size.keys(), "page too large; asking for fewer keys");
                            continue;
                        }
                        PageFailure::Compacted if attempt < MAX_READ_ATTEMPTS => {
                            debug!(revision, "revision compacted while paging; reading again");
                            attempt += 1;
                            continue 'read;
                        }
                        _ => return Err(error.into()),
                    },
                };
                if revision == 0 {
                    revision = page.header().map_or(0, |h| h.revision());
                }
                let mut bytes = 0;
                for kv in page.kvs() {
                    bytes += kv.key().len() + kv.value().len();
                    if let Ok(key) = kv.key_str() {
                        let entry = Entry {
                            key,
                            value: kv.value(),
                            lease: kv.lease(),
                        };
                        fold(&mut content, entry);
                    }
                }
                match page.kvs().last() {
                    Some(last) if page.more() => {
                        from = paging::key_after(last.key());
                        size.after_page(page.kvs().len(), bytes);
                    }
                    _ => return Ok(PrefixRead { content, revision }),
                }
            }
        }
    }

    /// Watches `prefix` from `revision` on. Fragmented: etcd splits a
    /// response of many events (a range deletion, or the revisions it sends
    /// at once to a watch that fell behind, up to 1,000) into parts no larger
    /// than its request size limit, or than one event, so that none exceeds
    /// [`MAX_RESPONSE_BYTES`] and breaks the watch; every event is whole in
    /// its part, and the changes of each part are reported as they come.
    pub(super) async fn watch_prefix(
        &mut self,
        prefix: &str,
        revision: i64,
    ) -> Result<PrefixWatch, StoreError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision)
            .with_fragment();
        let stream = self
            .client()
            .await?
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .watch(prefix, Some(options))
            .await?;
        Ok(PrefixWatch { stream })
    }
}

/// One key-value of a paged read, borrowed from its page: the fold copies
/// what it keeps.
pub struct Entry<'page> {
    /// The whole key, prefix included.
    pub key: &'page str,
    /// The value as etcd holds it.
    pub value: &'page [u8],
    /// The lease the key rides on; `0`: none.
    pub lease: LeaseId,
}

/// What a paged read folded together, and the revision it was read at.
pub struct PrefixRead<T> {
    /// What the fold made of every key-value.
    pub content: T,
    /// The revision every page was read at: a watch that starts right after
    /// it misses no change and repeats none.
    pub revision: i64,
}

/// Why a page could not be read, as far as paging can do something about it.
#[derive(Debug, PartialEq, Eq)]
enum PageFailure {
    /// The response exceeded our decoding limit: tonic's `OutOfRange`.
    TooLarge,
    /// The pinned revision was compacted: etcd's `OutOfRange` with its
    /// `ErrCompacted` text, the one etcd's own Go client recognises it by
    /// (both share the code, so the text is all that tells them apart).
    Compacted,
    Other,
}

fn page_failure(error: &etcd_client::Error) -> PageFailure {
    match error {
        etcd_client::Error::GRpcStatus(status) if status.code() == Code::OutOfRange => {
            if status
                .message()
                .contains("required revision has been compacted")
            {
                PageFailure::Compacted
            } else {
                PageFailure::TooLarge
            }
        }
        _ => PageFailure::Other,
    }
}

/// Reads every host's records under a prefix, for `list`; writes nothing.
pub struct RecordsReader {
    connection: Connection,
}

impl RecordsReader {
    /// Nothing is connected yet.
    pub fn new(endpoints: &[String], security: EtcdSecurity) -> Self {
        Self {
            connection: Connection::new(endpoints, security),
        }
    }

    /// Every key (that is UTF-8) and value under `prefix`, folded into what
    /// `start` makes, page by page (see `Connection::read_prefix`): nothing
    /// but `fold` decides what stays in memory.
    pub async fn read<T>(
        &mut self,
        prefix: &str,
        start: impl Fn() -> T,
        fold: impl FnMut(&mut T, Entry<'_>),
    ) -> Result<PrefixRead<T>, StoreError> {
        self.connection.read_prefix(prefix, start, fold).await
    }

    /// Watches `prefix` from `revision` on.
    pub async fn watch(&mut self, prefix: &str, revision: i64) -> Result<PrefixWatch, StoreError> {
        self.connection.watch_prefix(prefix, revision).await
    }
}

/// The watch on our host prefix.
pub struct PrefixWatch {
    stream: WatchStream,
}

impl PrefixWatch {
    /// The next changes; an error when the watch is broken or was cancelled
    /// (e.g. compacted), after which it must be re-created from a fresh read.
    pub async fn next_changes(&mut self) -> Result<Vec<Change>, StoreError> {
        loop {
            let Some(response) = self.stream.message().await? else {
                return Err(StoreError::StreamEnded("watch"));
            };
            if response.canceled() {
                return Err(StoreError::StreamEnded("watch"));
            }
            let changes: Vec<Change> = response
                .events()
                .iter()
                .filter_map(|event| {
                    let kv = event.kv()?;
                    Some(Change {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        revision: kv.mod_revision(),
                        deleted: event.event_type() == EventType::Delete,
                    })
                })
                .collect();
            if !changes.is_empty() {
                return Ok(changes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure_of(code: Code, message: &str) -> PageFailure {
        page_failure(&etcd_client::Error::GRpcStatus(tonic::Status::new(
            code, message,
        )))
    }

    #[test]
    fn out_of_range_is_a_compaction_by_etcds_text_and_otherwise_too_large() {
        // The texts as etcd 3.4 and tonic 0.14 send them.
        let compacted = "etcdserver: mvcc: required revision has been compacted";
        let too_large = "Error, decoded message length too large: found 6000300 bytes, \
                         the limit is: 4194304 bytes";
        assert_eq!(
            failure_of(Code::OutOfRange, compacted),
            PageFailure::Compacted
        );
        assert_eq!(
            failure_of(Code::OutOfRange, too_large),
            PageFailure::TooLarge
        );
        assert_eq!(failure_of(Code::Unavailable, compacted), PageFailure::Other);
        let transport = etcd_client::Error::InvalidArgs("no endpoint".into());
        assert_eq!(page_failure(&transport), PageFailure::Other);
    }
}
