//! A transaction's writes, applied under one new revision: the history,
//! the watch events and the log of effects.

use super::{Actor, Change, Duration, Effect, Instant, Kv, LeaseId, Past, State};

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum Write {
    Put(String, Vec<u8>),
    Delete(String),
    /// Deletes every key under the prefix.
    DeletePrefix(String),
}

impl Write {
    pub(super) fn bytes(&self) -> usize {
        match self {
            Write::Put(key, value) => key.len() + value.len(),
            Write::Delete(key) | Write::DeletePrefix(key) => key.len(),
        }
    }
}

impl State {
    pub fn since_start(&self) -> Duration {
        Instant::now().duration_since(self.start)
    }

    pub(super) fn trace_line(&mut self, line: String) {
        let at = self.since_start().as_millis();
        self.trace.push(format!("{at:>8} {line}"));
    }

    /// Applies the writes under one new revision if anything changes; that
    /// revision, or none when nothing changed (as etcd, whose header then
    /// carries the current revision, created by someone else).
    pub(super) fn commit(
        &mut self,
        actor: Actor,
        ops: &[Write],
        lease: LeaseId,
        expired: Option<(LeaseId, Option<usize>, Duration)>,
    ) -> Option<i64> {
        let revision = self.revision + 1;
        let mut changes = Vec::new();
        for op in ops {
            match op {
                Write::Put(key, value) => {
                    let create_revision =
                        self.kv.get(key).map_or(revision, |kv| kv.create_revision);
                    let kv = Kv {
                        value: value.clone(),
                        lease,
                        create_revision,
                    };
                    let previous = self.kv.insert(key.clone(), kv);
                    changes.push((key.clone(), Some(value.clone()), previous));
                }
                Write::Delete(key) => {
                    if let Some(previous) = self.kv.remove(key) {
                        changes.push((key.clone(), None, Some(previous)));
                    }
                }
                Write::DeletePrefix(prefix) => {
                    let keys: Vec<String> = self
                        .kv
                        .keys()
                        .filter(|key| key.starts_with(prefix.as_str()))
                        .cloned()
                        .collect();
                    for key in keys {
                        let previous = self.kv.remove(&key);
                        changes.push((key, None, previous));
                    }
                }
            }
        }
        if changes.is_empty() {
            return None;
        }
        self.revision = revision;
        let at = self.since_start();
        let holder = self
            .kv
            .iter()
            .filter(|(key, _)| key.starts_with(crate::store::LOCK_ROOT))
            .min_by_key(|(_, kv)| kv.create_revision)
            .and_then(|(_, kv)| self.leases.get(&kv.lease))
            .and_then(|lease| lease.owner);
        let mut by_watch: Vec<Vec<Change>> = vec![Vec::new(); self.watches.len()];
        for (key, value, previous) in changes {
            let change = Change {
                key: key.clone(),
                revision,
                value: value.clone(),
            };
            for (index, watch) in self.watches.iter().enumerate() {
                if key.starts_with(&watch.prefix) {
                    by_watch[index].push(change.clone());
                }
            }
            self.history.push(Past { change, previous });
            self.trace_line(format!(
                "{actor:?} r{revision} {} {key}",
                if value.is_some() { "put" } else { "del" }
            ));
            self.effects.push(Effect {
                at,
                actor,
                key,
                value,
                revision,
                expired,
                holder,
            });
        }
        let mut index = 0;
        self.watches.retain(|watch| {
            let changes = std::mem::take(&mut by_watch[index]);
            index += 1;
            changes.is_empty() || watch.sender.send(Ok(changes)).is_ok()
        });
        Some(revision)
    }
}
