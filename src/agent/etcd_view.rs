//! The agent's side of etcd: its picture of our prefix ([`EtcdView`]) and the
//! watch that tells it when someone else changed it ([`PrefixWatch`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::{self, LeaseId, Observed, Operation};
use crate::store::Change;

/// The lease of a record someone else wrote and we have not read yet: no
/// lease of ours, so the record never counts as right.
const UNKNOWN_LEASE: LeaseId = -1;

/// What the agent believes etcd holds under its host's prefix.
#[derive(Debug, Default)]
pub(super) enum EtcdView {
    /// Not to be trusted (never read, a write failed, the lease or the lock
    /// changed, someone else wrote): read etcd again and reconcile before
    /// planning anything against it.
    #[default]
    Stale,
    /// Our last full read, plus our own writes since.
    Current {
        /// Our host's records, by key.
        records: BTreeMap<String, Observed>,
        /// The revision of that read: a change the watch reports at or
        /// before it was already in the read.
        read_revision: i64,
    },
    /// Someone else changed our prefix while the repair budget holds the
    /// repair back: the repair reads etcd again when it is due, but the
    /// writes for the containers we follow must not wait for it (a drained
    /// record goes at once, however often someone writes beside us). They
    /// are planned against the last read, our writes since and what the
    /// watch told of the foreign changes: a key someone deleted is gone, a
    /// key someone wrote holds a value we do not know.
    Disturbed {
        records: BTreeMap<String, Observed>,
        read_revision: i64,
    },
}

impl EtcdView {
    /// The records as last read or written, unless stale.
    pub(super) fn records(&self) -> Option<&BTreeMap<String, Observed>> {
        match self {
            EtcdView::Stale => None,
            EtcdView::Current { records, .. } | EtcdView::Disturbed { records, .. } => {
                Some(records)
            }
        }
    }

    /// Whether our writes can be planned against this view (current, or
    /// disturbed by someone else); false while stale.
    pub(super) fn is_known(&self) -> bool {
        !matches!(self, EtcdView::Stale)
    }

    /// Whether no repair is owed: read, and changed by us alone since.
    pub(super) fn is_current(&self) -> bool {
        matches!(self, EtcdView::Current { .. })
    }

    /// Whether the last full read already saw the change at `revision`.
    /// Nothing is seen while stale: every change then counts.
    pub(super) fn has_seen(&self, revision: i64) -> bool {
        match self {
            EtcdView::Stale => false,
            EtcdView::Current { read_revision, .. } | EtcdView::Disturbed { read_revision, .. } => {
                revision <= *read_revision
            }
        }
    }

    /// Foreign `changes` seen in the watch, their repair held back: the view
    /// turns disturbed and tells what is known of them (see `Disturbed`).
    pub(super) fn disturb(&mut self, changes: &[&Change]) {
        let (records, read_revision) = match std::mem::take(self) {
            EtcdView::Stale => return,
            EtcdView::Current {
                records,
                read_revision,
            }
            | EtcdView::Disturbed {
                records,
                read_revision,
            } => (records, read_revision),
        };
        let mut records = records;
        for change in changes {
            if change.deleted() {
                records.remove(&change.key);
            } else {
                let unknown = Observed {
                    value: Vec::new(),
                    lease: UNKNOWN_LEASE,
                };
                records.insert(change.key.clone(), unknown);
            }
        }
        *self = EtcdView::Disturbed {
            records,
            read_revision,
        };
    }

    /// Operations etcd confirmed (or that a dry run pretends it did), on
    /// `lease`; nothing to remember while stale, the next read tells.
    pub(super) fn applied(&mut self, operations: &[Operation], lease: LeaseId) {
        if let EtcdView::Current { records, .. } | EtcdView::Disturbed { records, .. } = self {
            plan::record_applied(records, operations, lease);
        }
    }

    /// How many records we believe are there (0 while stale).
    pub(super) fn len(&self) -> usize {
        self.records().map_or(0, BTreeMap::len)
    }
}

/// The watch on our prefix, and which of the revisions it will report are
/// our own writes (those need no repair).
pub(super) struct PrefixWatch<W> {
    /// The store's stream of changes under our prefix.
    pub(super) stream: W,
    /// Revisions of our own writes not yet seen in the stream.
    own_revisions: BTreeSet<i64>,
}

impl<W> PrefixWatch<W> {
    pub(super) fn new(stream: W) -> Self {
        Self {
            stream,
            own_revisions: BTreeSet::new(),
        }
    }

    /// Our writes, at these revisions, are coming.
    pub(super) fn expect(&mut self, revisions: impl IntoIterator<Item = i64>) {
        self.own_revisions.extend(revisions);
    }

    /// Whether the change at `revision` is one of our writes.
    pub(super) fn is_own(&self, revision: i64) -> bool {
        self.own_revisions.contains(&revision)
    }

    /// The watch reports revisions in order: ours up to `latest` are past.
    pub(super) fn seen_up_to(&mut self, latest: i64) {
        self.own_revisions = self.own_revisions.split_off(&latest);
    }
}
