//! The read side of the etcd adapter: a prefix read in pages pinned to one
//! revision (used by the agent's `Etcd::observe` and by `list`'s
//! [`RecordsReader`]), and the watch on a prefix.

use etcd_client::{EventType, GetOptions, GetResponse, WatchOptions, WatchStream};
use tonic::Code;

use super::{Change, Connection, StoreError};
use crate::config::EtcdSecurity;
use crate::store::paging::{self, Entry, Page, PageFailure, PageRequest, PrefixRead, RawEntry};
use crate::store::{RecordSource, REQUEST_TIMEOUT};

/// The largest range or watch response we accept (the gRPC decoding limit;
/// tonic's default is 4 MiB). Pages aim at `paging::TARGET_PAGE_BYTES`
/// (8 MiB) from the average size of the values seen so far; this leaves
/// room for values several times larger than that average, and for one
/// key-value as large as etcd allows (`--max-request-bytes`, 1.5 MiB by
/// default; etcd warns above 10 MiB). It costs nothing when unused: tonic
/// refuses a larger response by its length prefix, before buffering it, and
/// the page is then asked for again with half the keys.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

impl Connection {
    /// Every key (that is UTF-8) under `prefix`, folded into what `start`
    /// makes, read in pages pinned to one revision (`store::paging`).
    pub(super) async fn read_prefix<T>(
        &mut self,
        prefix: &str,
        start: impl Fn() -> T,
        fold: impl FnMut(&mut T, Entry<'_>),
    ) -> Result<PrefixRead<T>, StoreError> {
        let fetch = async |request: PageRequest<'_>| {
            let options = GetOptions::new()
                .with_range(request.end)
                .with_limit(request.limit)
                .with_revision(request.revision);
            let mut kv = self
                .client()
                .await
                .map_err(PageError::Store)?
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES);
            kv.get(request.from, Some(options))
                .await
                .map_err(PageError::Etcd)
        };
        let classify = |error: &PageError| match error {
            PageError::Etcd(error) => page_failure(error),
            PageError::Store(_) => PageFailure::Other,
        };
        paging::read_prefix(prefix, start, fold, fetch, classify)
            .await
            .map_err(|error| match error {
                PageError::Etcd(error) => error.into(),
                PageError::Store(error) => error,
            })
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

/// Why one page could not be read: no connection, or etcd's answer.
enum PageError {
    Store(StoreError),
    Etcd(etcd_client::Error),
}

impl Page for GetResponse {
    fn revision(&self) -> i64 {
        self.header().map_or(0, |h| h.revision())
    }

    fn more(&self) -> bool {
        GetResponse::more(self)
    }

    fn entries(&self) -> impl Iterator<Item = RawEntry<'_>> {
        self.kvs().iter().map(|kv| RawEntry {
            key: kv.key(),
            value: kv.value(),
            lease: kv.lease(),
        })
    }
}

/// A failed page by its gRPC code: `OutOfRange` is tonic's for a response
/// over our decoding limit, and etcd's for a compacted revision, which only
/// its `ErrCompacted` text tells apart (etcd's own Go client recognises it
/// by that text too).
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
            connection: Connection::new(endpoints, security, Some(REQUEST_TIMEOUT)),
        }
    }
}

impl RecordSource for RecordsReader {
    type Watch = PrefixWatch;

    /// See `Connection::read_prefix`.
    async fn read<T>(
        &mut self,
        prefix: &str,
        start: impl Fn() -> T,
        fold: impl FnMut(&mut T, Entry<'_>),
    ) -> Result<PrefixRead<T>, StoreError> {
        self.connection.read_prefix(prefix, start, fold).await
    }

    async fn watch(&mut self, prefix: &str, revision: i64) -> Result<PrefixWatch, StoreError> {
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
                return Err(match response.compact_revision() {
                    0 => StoreError::StreamEnded("watch"),
                    compacted => StoreError::WatchCompacted(compacted),
                });
            }
            let changes: Vec<Change> = response
                .events()
                .iter()
                .filter_map(|event| {
                    let kv = event.kv()?;
                    // A key that is not UTF-8 is skipped, as a paged read
                    // skips it: what is watched is what is read.
                    let key = std::str::from_utf8(kv.key()).ok()?;
                    Some(Change {
                        key: key.to_owned(),
                        revision: kv.mod_revision(),
                        value: (event.event_type() != EventType::Delete)
                            .then(|| kv.value().to_vec()),
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
