//! What the agent wants in etcd: [`Wanted`], the desired record (or the
//! reason it is withheld) of every container, as the watcher's observations
//! say; and the loop's step that applies those observations.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use tracing::{debug, info, warn};

use super::etcd_view::EtcdView;
use super::Agent;
use crate::container::{Container, Verdict, Withheld};
use crate::plan::{self, Observed};
use crate::record::{self, Desired, HostPrefix, Record};
use crate::store::Store;
use crate::watcher::Observation;

/// What the agent wants in etcd, as far as the engine has told it.
#[derive(Debug, Default)]
pub(super) enum Wanted {
    /// The engine has not been listed yet: nothing is known of what runs,
    /// so nothing may be written (an empty wish would delete every record).
    #[default]
    NotListed,
    /// Known from a listing and every change since.
    Listed(Known),
}

/// What a listing and the changes since tell, per container id.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Known {
    /// The record each qualifying container should have.
    records: BTreeMap<String, Record>,
    /// Containers held back only by their health (`--require-healthy`).
    withheld: BTreeMap<String, Withheld>,
    /// Containers the engine runs but could not tell us about (their inspect
    /// failed): whatever etcd holds for them stands, never deleted.
    unknown: BTreeSet<String>,
}

impl Wanted {
    /// A listing: it replaces everything, but for the containers it could
    /// not inspect, whose last known state stands.
    pub(super) fn relisted(
        &mut self,
        listed: impl IntoIterator<Item = (String, Desired)>,
        unknown: BTreeSet<String>,
    ) {
        let mut known = Known::default();
        for (id, desired) in listed {
            known.set(&id, desired);
        }
        if let Wanted::Listed(previous) = self {
            for id in &unknown {
                if let Some(record) = previous.records.remove(id) {
                    known.records.insert(id.clone(), record);
                }
                if let Some(reason) = previous.withheld.remove(id) {
                    known.withheld.insert(id.clone(), reason);
                }
            }
        }
        known.unknown = unknown;
        *self = Wanted::Listed(known);
    }

    /// What one container wants now, after an event. Ignored before the
    /// first listing, which tells everything anyway (the watcher reports
    /// changes only after it).
    pub(super) fn changed(&mut self, id: &str, desired: Desired) {
        if let Wanted::Listed(known) = self {
            known.set(id, desired);
            known.unknown.remove(id);
        }
    }

    /// One container could not be inspected: its last known state stands.
    pub(super) fn inspect_failed(&mut self, id: String) {
        if let Wanted::Listed(known) = self {
            known.unknown.insert(id);
        }
    }

    /// Whether container `id` has a record wanted.
    pub(super) fn has_record(&self, id: &str) -> bool {
        self.known()
            .is_some_and(|known| known.records.contains_key(id))
    }

    pub(super) fn is_listed(&self) -> bool {
        matches!(self, Wanted::Listed(_))
    }

    /// The containers held back by their health, with the reason.
    pub(super) fn withheld(&self) -> impl Iterator<Item = &Withheld> + Clone {
        self.known()
            .into_iter()
            .flat_map(|known| known.withheld.values())
    }

    /// How many records are wanted.
    pub(super) fn len(&self) -> usize {
        self.known().map_or(0, |known| known.records.len())
    }

    /// Every wanted record as key → value, with the records of containers
    /// we know nothing about kept as `observed` has them: they are moved
    /// onto our lease but never deleted.
    pub(super) fn by_key(
        &self,
        host: &HostPrefix,
        observed: &BTreeMap<String, Observed>,
    ) -> BTreeMap<String, String> {
        let Some(known) = self.known() else {
            return BTreeMap::new();
        };
        let mut desired: BTreeMap<String, String> = known
            .records
            .values()
            .map(|record| (record.key.clone(), record.value.clone()))
            .collect();
        for (key, observed) in observed {
            let record = host.parse(key);
            if !record.is_some_and(|record| known.unknown.contains(record.container)) {
                continue;
            }
            if let Ok(value) = std::str::from_utf8(&observed.value) {
                desired
                    .entry(key.clone())
                    .or_insert_with(|| value.to_owned());
            }
        }
        desired
    }

    /// The wanted and observed records of just these containers.
    pub(super) fn of(
        &self,
        ids: &BTreeSet<String>,
        host: &HostPrefix,
        observed: &BTreeMap<String, Observed>,
    ) -> (BTreeMap<String, String>, BTreeMap<String, Observed>) {
        let desired = self.known().map_or_else(BTreeMap::new, |known| {
            ids.iter()
                .filter_map(|id| known.records.get(id))
                .map(|record| (record.key.clone(), record.value.clone()))
                .collect()
        });
        let observed = observed
            .iter()
            .filter(|(key, _)| {
                let record = host.parse(key);
                record.is_some_and(|record| ids.contains(record.container))
            })
            .map(|(key, observed)| (key.clone(), observed.clone()))
            .collect();
        (desired, observed)
    }

    fn known(&self) -> Option<&Known> {
        match self {
            Wanted::NotListed => None,
            Wanted::Listed(known) => Some(known),
        }
    }
}

impl Known {
    /// Files what is wanted for container `id`: its record, or why it is
    /// withheld; whatever was filed for it before goes.
    fn set(&mut self, id: &str, desired: Desired) {
        self.records.remove(id);
        self.withheld.remove(id);
        match desired {
            Desired::Registered(record) => {
                self.records.insert(id.to_owned(), record);
            }
            Desired::Withheld(reason) => {
                self.withheld.insert(id.to_owned(), reason);
            }
            Desired::Nothing => {}
        }
    }
}

impl<S: Store> Agent<S> {
    /// Applies what the watcher saw: a listing replaces the wanted records
    /// (but for containers it could not inspect), a change replaces one
    /// container's; the changes go to etcd in one transaction.
    pub(super) async fn observe_engine(&mut self, observations: Vec<Observation>) {
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut relisted = false;
        for observation in observations {
            match observation {
                Observation::Listed {
                    containers,
                    unknown,
                } => {
                    let listed: Vec<(String, Desired)> = containers
                        .iter()
                        .map(|container| (container.id.clone(), self.desired_for(container)))
                        .collect();
                    if !self.wanted.is_listed() {
                        // What was kept alive before the engine answered is
                        // reconciled by a full repair, which says `ready`.
                        self.etcd_view = EtcdView::Stale;
                        self.previous_leases.clear();
                    }
                    self.wanted.relisted(listed, unknown);
                    relisted = true;
                    self.docker_health.recovered();
                }
                Observation::Changed { id, container } => {
                    let desired = container.map_or(Desired::Nothing, |c| self.desired_for(&c));
                    self.wanted.changed(&id, desired);
                    touched.insert(id);
                }
                Observation::Draining { id } => {
                    if self.wanted.has_record(&id) {
                        self.metrics.drained();
                        info!(
                            container_id = id,
                            "container asked to stop; its record goes before it does"
                        );
                    }
                    self.wanted.changed(&id, Desired::Nothing);
                    touched.insert(id);
                }
                Observation::InspectFailed { id, error } => {
                    warn!(container_id = id, error = %error, "cannot inspect container; keeping its record as it is and trying again");
                    self.wanted.inspect_failed(id);
                }
                Observation::EngineDown(error) => self.docker_health.failed(&error),
                Observation::Connected(identity) => self.engine_connected(identity),
            }
        }
        self.metrics.set_withheld(self.wanted.withheld());
        if !self.may_write() {
            return; // the next repair reconciles everything
        }
        let Some(observed) = self.etcd_view.records() else {
            return; // the next repair reads etcd and reconciles everything
        };
        if relisted && !self.etcd_view.is_current() {
            // A listing keeps the records of containers it could not
            // inspect as etcd holds them, which a disturbed view does not
            // know: the repair that is due reads etcd first.
            return;
        }
        let host = &self.config.host;
        let (desired, observed) = if relisted {
            (self.wanted.by_key(host, observed), observed.clone())
        } else {
            self.wanted.of(&touched, host, observed)
        };
        let operations = plan::plan(&desired, &observed, self.lease_policy());
        if let Err(error) = self.apply(&operations).await {
            self.etcd_failed(error);
        }
    }

    /// The record `container` calls for, just inspected: what of it the
    /// record cannot carry is said here, once per inspect (docs/security.md "Trust
    /// boundary").
    pub(super) fn desired_for(&self, container: &Container) -> Desired {
        let desired = record::desired(container, &self.config.selection, &self.config.host);
        if container.verdict(&self.config.selection) != Verdict::NotSelected {
            for rejection in
                record::rejections(container, &self.config.host, &self.config.selection)
            {
                self.metrics.rejected_input(rejection.field);
                warn!(
                    container_id = container.id,
                    field = rejection.field,
                    value = rejection.value,
                    reason = rejection.reason,
                    "container input outside the grammar"
                );
            }
        }
        if let Desired::Withheld(reason) = desired {
            debug!(
                container_id = container.id,
                reason = reason.as_str(),
                "withheld until healthy"
            );
        }
        desired
    }
}
