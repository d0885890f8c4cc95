//! Pure: the consumers' in-memory index of every record under the root
//! that a filter admits, filled from one read and then kept equal to etcd by
//! the watch's changes (`informer.rs`), so that a change costs the work of
//! that change, not a read of the whole cluster.
//!
//! Compact by construction: a record is kept once, parsed (no copy of its
//! JSON), with the names it shares with other records (service, image)
//! shared, not copied; keys that are no records are only counted (a hash
//! each), and the first few named.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;

use super::{Filter, Row, Unreadable, Unreadables, NAMED_UNREADABLE};
use crate::record::name::Names;
use crate::record::{ContainerId, Name, RecordKey, StoredBinding, StoredKey, StoredRecord};

/// Where a record sorts: by host address (`10.0.0.2` before `10.0.0.10`),
/// service, container, then key (two keys can only name one container of
/// one host when one spells the host differently). Built from the key alone,
/// so that a deletion, which carries no value, finds its record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    host: IpAddr,
    service: Name,
    container: ContainerId,
    key: Box<str>,
}

/// What applying changes did to what the consumers show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Update {
    /// The rows changed: a rendering or a listing would differ.
    pub rows: bool,
    /// The keys that are no records changed: worth a WARN, not a rendering.
    pub unreadable: bool,
}

impl Update {
    pub fn any(self) -> bool {
        self.rows || self.unreadable
    }

    /// This update and `other` together.
    pub fn and(self, other: Update) -> Update {
        Update {
            rows: self.rows || other.rows,
            unreadable: self.unreadable || other.unreadable,
        }
    }
}

/// The records a filter admits, by [`Place`], each with its admitted
/// bindings; and the keys that are no records.
#[derive(Debug)]
pub struct Index {
    /// Stripped from every key to find its host, service and container.
    root: Box<str>,
    /// Decides which records are kept; the others cost nothing.
    filter: Filter,
    /// Every admitted record with at least one admitted binding.
    records: BTreeMap<Place, Vec<StoredBinding>>,
    /// The service and image names the records share.
    names: Names,
    /// The keys (of admitted hosts) that are no records.
    unreadable: UnreadableKeys,
}

impl Index {
    pub fn new(root: &str, filter: Filter) -> Self {
        Self {
            root: root.into(),
            filter,
            records: BTreeMap::new(),
            names: Names::default(),
            unreadable: UnreadableKeys::default(),
        }
    }

    /// An empty index of the same root and filter, for a read from scratch.
    pub fn empty_like(&self) -> Self {
        Self::new(&self.root, self.filter.clone())
    }

    /// How many records are kept.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Puts `key` with `value` (a read's key-value, or a watched put).
    pub fn put(&mut self, key: &str, value: &[u8]) -> Update {
        let (old, was_unreadable) = self.remove(key);
        let (new, unreadable) = self.parse(key, value);
        let rows = match new {
            Some((place, bindings)) => {
                let changed = old.as_ref() != Some(&bindings);
                self.records.insert(place, bindings);
                changed
            }
            None => old.is_some(),
        };
        if let Some(problem) = unreadable {
            self.unreadable.add(key, problem);
        }
        Update {
            rows,
            // A key that stays no record (written again, say) changes
            // nothing worth saying: only a key that becomes or stops being
            // one does.
            unreadable: was_unreadable != unreadable.is_some(),
        }
    }

    /// Deletes `key` (a watched deletion).
    pub fn delete(&mut self, key: &str) -> Update {
        let (old, was_unreadable) = self.remove(key);
        Update {
            rows: old.is_some(),
            unreadable: was_unreadable,
        }
    }

    /// Whether `other` holds the same rows.
    pub fn same_rows(&self, other: &Index) -> bool {
        self.records == other.records
    }

    /// The rows, sorted by host address, service, container, then in the
    /// record's own order of its bindings.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.records.iter().flat_map(|(place, bindings)| {
            bindings
                .iter()
                .map(move |binding| Row::of(place_parts(place), binding))
        })
    }

    /// The keys that are no records: the first few by name, and the count.
    pub fn unreadables(&self) -> Unreadables {
        self.unreadable.summary()
    }

    /// Removes whatever `key` was: its record's bindings, and whether it was
    /// a key that is no record.
    fn remove(&mut self, key: &str) -> (Option<Vec<StoredBinding>>, bool) {
        let record = self
            .place_of(key)
            .and_then(|place| self.records.remove(&place));
        let unreadable = record.is_none() && self.unreadable.remove(key);
        (record, unreadable)
    }

    /// The place `key` has if it names a record, from its segments alone.
    fn place_of(&self, key: &str) -> Option<Place> {
        let segments = RecordKey::parse(&self.root, key)?;
        let StoredKey {
            host,
            service,
            container,
        } = StoredKey::parse(&segments).ok()?;
        Some(Place {
            host,
            service,
            container,
            key: key.into(),
        })
    }

    /// The record of `key` and its admitted bindings, its names shared;
    /// or why it is no record; or neither when the filter does not want it.
    #[allow(clippy::type_complexity)]
    fn parse(
        &mut self,
        key: &str,
        value: &[u8],
    ) -> (Option<(Place, Vec<StoredBinding>)>, Option<&'static str>) {
        match admit(&self.root, &self.filter, key, value) {
            Admission::Record(stored) => {
                let bindings = stored
                    .bindings
                    .into_iter()
                    .map(|binding| StoredBinding {
                        image: self.names.share(binding.image),
                        ..binding
                    })
                    .collect();
                let place = Place {
                    host: stored.host,
                    service: self.names.share(stored.service),
                    container: stored.container,
                    key: key.into(),
                };
                (Some((place, bindings)), None)
            }
            Admission::Unreadable(problem) => (None, Some(problem)),
            Admission::Skipped => (None, None),
        }
    }
}

/// What a filter makes of one key-value under the root.
#[derive(Debug)]
pub enum Admission {
    /// A record, with only the bindings the filter admits (at least one).
    Record(StoredRecord),
    /// A key of an admitted host that is no record, and why.
    Unreadable(&'static str),
    /// Not wanted: another host, service or image.
    Skipped,
}

/// Judges `key` and `value` under `root` by `filter`.
pub fn admit(root: &str, filter: &Filter, key: &str, value: &[u8]) -> Admission {
    if !filter.admits_host(RecordKey::host_of(root, key)) {
        return Admission::Skipped;
    }
    let Some(segments) = RecordKey::parse(root, key) else {
        return Admission::Unreadable("not {prefix}/{host}/{image}/{container}");
    };
    if !filter.admits_service(segments.service) {
        return Admission::Skipped;
    }
    let mut stored = match StoredRecord::parse(&segments, value) {
        Ok(stored) => stored,
        Err(problem) => return Admission::Unreadable(problem),
    };
    stored
        .bindings
        .retain(|binding| filter.admits_image(&binding.image));
    if stored.bindings.is_empty() {
        return Admission::Skipped;
    }
    Admission::Record(stored)
}

fn place_parts(place: &Place) -> (IpAddr, &Name, &ContainerId, &str) {
    (place.host, &place.service, &place.container, &place.key)
}

/// The keys that are no records: all of them counted by a hash (so that a
/// root full of foreign keys costs 8 bytes a key, and a deletion is
/// recognised), the [`NAMED_UNREADABLE`] first in key order by name. A named
/// key deleted leaves its place empty until the next read from scratch
/// (the others are not kept to fill it): the WARN may name fewer then.
#[derive(Debug, Default)]
struct UnreadableKeys {
    /// Keyed per process, so that nobody can aim keys at one hash.
    hasher: RandomState,
    hashes: HashSet<u64>,
    /// The first few by key, with why each is no record.
    named: BTreeMap<Box<str>, &'static str>,
}

impl UnreadableKeys {
    fn add(&mut self, key: &str, problem: &'static str) {
        self.hashes.insert(self.hasher.hash_one(key));
        self.named.insert(key.into(), problem);
        if self.named.len() > NAMED_UNREADABLE {
            self.named.pop_last();
        }
    }

    fn remove(&mut self, key: &str) -> bool {
        self.named.remove(key);
        self.hashes.remove(&self.hasher.hash_one(key))
    }

    fn summary(&self) -> Unreadables {
        Unreadables {
            named: self
                .named
                .iter()
                .map(|(key, problem)| Unreadable {
                    key: key.to_string(),
                    problem,
                })
                .collect(),
            count: self.hashes.len(),
        }
    }
}
