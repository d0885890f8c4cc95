//! What the consumers (`list --watch`, `render`) share: an informer, in the
//! shape of Kubernetes' reflector. One consistent read of every host's
//! records into an in-memory [`Index`], then the watch from the revision
//! right after it, whose changes are applied to the index as they come: a
//! change costs etcd nothing but the event it sends. The prefix is read
//! again only when the watch is lost (etcd restarted, the connection broke,
//! the revision it was at was compacted), and an etcd outage is retried
//! every second, said once when it starts and once when it ends. Any
//! `store::RecordSource` will do: etcd, or the simulator's cluster.

use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::listing::{Filter, Index, Update};
use crate::store::{Change, PrefixChanges, RecordSource, StoreError};

/// Pause before reading again after etcd failed.
const RETRY: Duration = Duration::from_secs(1);

/// Where the records to follow are.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The root of all keys, with its trailing `/`.
    pub root: &'a str,
    /// What to read under it: the root, or one host's prefix.
    pub prefix: &'a str,
    /// Which records are kept.
    pub filter: &'a Filter,
}

/// One read of the records: the index and the revision it was read at.
pub struct Listing {
    pub index: Index,
    pub revision: i64,
}

/// Reads every record under the source's prefix into an index, page by
/// page, at one revision.
pub async fn read(
    reader: &mut impl RecordSource,
    source: &Source<'_>,
) -> Result<Listing, StoreError> {
    let read = reader
        .read(
            source.prefix,
            || Index::new(source.root, source.filter.clone()),
            |index, entry| {
                index.put(entry.key, entry.value);
            },
        )
        .await?;
    Ok(Listing {
        index: read.content,
        revision: read.revision,
    })
}

/// The records, kept equal to etcd's.
pub struct Informer<'a, R: RecordSource> {
    /// Where the records are read and watched.
    reader: R,
    /// What is read and kept.
    source: Source<'a>,
    /// The records as of `revision`.
    index: Index,
    /// The revision of the last read or change applied.
    revision: i64,
    /// Following the watch, or to read again (kept here, not in a local,
    /// so that a caller that drops [`Informer::next_update`] midway leaves
    /// nothing half done).
    watch: Watch<R::Watch>,
    /// Whether etcd is failing now: said once when it starts and ends.
    failing: bool,
}

/// Where the informer is with etcd's watch.
enum Watch<W> {
    /// Following the watch from right after the revision read, started
    /// `since`.
    Following { watch: W, since: Instant },
    /// The watch is lost: the records are read again, after [`RETRY`] when
    /// `pause` (a watch lost within that long of its start), so that a
    /// watch that ends as soon as it starts costs a read a second, not
    /// reads back to back.
    Lost { pause: bool },
}

impl<W> Watch<W> {
    fn following(&mut self) -> Option<&mut W> {
        match self {
            Watch::Following { watch, .. } => Some(watch),
            Watch::Lost { .. } => None,
        }
    }
}

impl<'a, R: RecordSource> Informer<'a, R> {
    /// Reads the records and starts watching, retrying until etcd answers.
    pub async fn start(reader: R, source: Source<'a>) -> Self {
        let mut informer = Informer {
            reader,
            source,
            index: Index::new(source.root, source.filter.clone()),
            revision: 0,
            watch: Watch::Lost { pause: false },
            failing: false,
        };
        informer.read_again().await;
        informer
    }

    /// The records as of [`Informer::revision`].
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The revision of the last read or change applied.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Whether it follows the watch; `false` while the watch is lost and the
    /// records are to be read again (then [`Informer::next_update`] is a
    /// whole read, which a caller should let finish).
    pub fn is_watching(&self) -> bool {
        matches!(self.watch, Watch::Following { .. })
    }

    /// Waits for changes that alter the index, and applies them with every
    /// change already waiting behind them (a burst is one update). Changes
    /// that alter nothing kept (another host's, a record rewritten with its
    /// own value) are applied and waited past. A lost watch is a read from
    /// scratch; its update says what differs from before.
    pub async fn next_update(&mut self) -> Update {
        self.next(false).await
    }

    /// Like [`Informer::next_update`], but also returns when the watch is
    /// lost (with what changed before, perhaps nothing) and after a read
    /// from scratch (with what it found, perhaps nothing): for a caller
    /// that says whether it follows etcd ([`Informer::is_watching`]) and
    /// has timers of its own to run once the records are read again.
    pub async fn next_change_or_loss(&mut self) -> Update {
        self.next(true).await
    }

    async fn next(&mut self, return_at_loss: bool) -> Update {
        loop {
            let Some(watch) = self.watch.following() else {
                let update = self.read_again().await;
                if update.any() || return_at_loss {
                    return update;
                }
                continue;
            };
            let mut update = match watch.next_changes().await {
                Ok(changes) => self.apply(&changes),
                Err(error) => {
                    self.lost(&error);
                    Update::default()
                }
            };
            while let Some(outcome) = self
                .watch
                .following()
                .and_then(|w| w.next_changes().now_or_never())
            {
                match outcome {
                    Ok(changes) => update = update.and(self.apply(&changes)),
                    Err(error) => self.lost(&error),
                }
            }
            if update.any() || (return_at_loss && !self.is_watching()) {
                return update;
            }
        }
    }

    fn apply(&mut self, changes: &[Change]) -> Update {
        let mut update = Update::default();
        for change in changes {
            let applied = match &change.value {
                Some(value) => self.index.put(&change.key, value),
                None => self.index.delete(&change.key),
            };
            update = update.and(applied);
            self.revision = self.revision.max(change.revision);
        }
        update
    }

    fn lost(&mut self, error: &StoreError) {
        info!(error = %error, revision = self.revision, "watch lost; reading the records again");
        let pause = match &self.watch {
            Watch::Following { since, .. } => since.elapsed() < RETRY,
            Watch::Lost { pause } => *pause,
        };
        self.watch = Watch::Lost { pause };
    }

    /// Reads from scratch and watches from right after, until etcd answers;
    /// what differs from the index before.
    async fn read_again(&mut self) -> Update {
        if let Watch::Lost { pause: true } = self.watch {
            tokio::time::sleep(RETRY).await;
            self.watch = Watch::Lost { pause: false };
        }
        loop {
            match self.read_and_watch().await {
                Ok((listing, watch)) => {
                    if std::mem::take(&mut self.failing) {
                        info!("etcd answers again");
                    }
                    debug!(
                        records = listing.index.len(),
                        revision = listing.revision,
                        "records read"
                    );
                    let update = Update {
                        rows: !listing.index.same_rows(&self.index),
                        unreadable: listing.index.unreadables() != self.index.unreadables(),
                    };
                    self.index = listing.index;
                    self.revision = listing.revision;
                    self.watch = Watch::Following {
                        watch,
                        since: Instant::now(),
                    };
                    return update;
                }
                Err(error) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        warn!(error = %error, "cannot read etcd; retrying");
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    async fn read_and_watch(&mut self) -> Result<(Listing, R::Watch), StoreError> {
        let listing = read(&mut self.reader, &self.source).await?;
        let watch = self
            .reader
            .watch(self.source.prefix, listing.revision + 1)
            .await?;
        Ok((listing, watch))
    }
}
