//! What the agent wants in etcd: the desired record (or the reason it is
//! withheld) of every container, as the watcher's observations say.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{debug, warn};

use super::Agent;
use crate::container::{Container, Withheld};
use crate::plan::{self, Observed};
use crate::record::{self, Desired, Record};
use crate::store::Store;
use crate::watcher::Observation;

impl<S: Store> Agent<S> {
    /// Applies what the watcher saw: a listing replaces the desired records
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
                    let mut desired = BTreeMap::new();
                    let mut withheld = BTreeMap::new();
                    for container in &containers {
                        let wanted = self.desired_for(container);
                        remember(&mut desired, &mut withheld, &container.id, wanted);
                    }
                    for id in &unknown {
                        if let Some(record) = self.desired.remove(id) {
                            desired.insert(id.clone(), record);
                        }
                        if let Some(reason) = self.withheld.remove(id) {
                            withheld.insert(id.clone(), reason);
                        }
                    }
                    self.desired = desired;
                    self.withheld = withheld;
                    self.unknown = unknown;
                    self.listed_once = true;
                    relisted = true;
                    self.docker_health.recovered();
                }
                Observation::Changed { id, container } => {
                    let wanted = container.map_or(Desired::Nothing, |c| self.desired_for(&c));
                    remember(&mut self.desired, &mut self.withheld, &id, wanted);
                    self.unknown.remove(&id);
                    touched.insert(id);
                }
                Observation::InspectFailed { id, error } => {
                    warn!(container_id = id, error = %error, "cannot inspect container; keeping its record as it is and trying again");
                    self.unknown.insert(id);
                }
                Observation::EngineDown(error) => self.docker_health.failed(&error),
            }
        }
        self.metrics.set_withheld(self.withheld.values());
        if !self.may_write() || !self.etcd_in_sync {
            return; // the next repair reconciles everything
        }
        let (desired, observed) = if relisted {
            let mut desired = self.desired_by_key();
            self.keep_unknown(&mut desired, &self.observed);
            (desired, self.observed.clone())
        } else {
            self.desired_and_observed_of(&touched)
        };
        let operations = plan::plan(&desired, &observed, self.lease_policy());
        if let Err(error) = self.apply(&operations).await {
            self.etcd_failed(error);
        }
    }

    /// The records that containers the agent knows nothing about have in
    /// etcd stand as they are: they join `desired`, so that they are moved
    /// onto our lease but never deleted.
    pub(super) fn keep_unknown(
        &self,
        desired: &mut BTreeMap<String, String>,
        observed: &BTreeMap<String, Observed>,
    ) {
        for (key, observed) in observed {
            let record = self.config.host.parse(key);
            if !record.is_some_and(|record| self.unknown.contains(record.container)) {
                continue;
            }
            if let Ok(value) = std::str::from_utf8(&observed.value) {
                desired
                    .entry(key.clone())
                    .or_insert_with(|| value.to_owned());
            }
        }
    }

    /// The desired and observed records of just these containers.
    pub(super) fn desired_and_observed_of(
        &self,
        ids: &BTreeSet<String>,
    ) -> (BTreeMap<String, String>, BTreeMap<String, Observed>) {
        let desired = ids
            .iter()
            .filter_map(|id| self.desired.get(id))
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        let observed = self
            .observed
            .iter()
            .filter(|(key, _)| {
                let record = self.config.host.parse(key);
                record.is_some_and(|record| ids.contains(record.container))
            })
            .map(|(key, observed)| (key.clone(), observed.clone()))
            .collect();
        (desired, observed)
    }

    pub(super) fn desired_by_key(&self) -> BTreeMap<String, String> {
        self.desired
            .values()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect()
    }

    pub(super) fn desired_for(&self, container: &Container) -> Desired {
        let desired = record::desired(container, &self.config.selection, &self.config.host);
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

/// Files what is wanted for container `id`: its record, or why it is
/// withheld; whatever was filed for it before goes.
fn remember(
    desired: &mut BTreeMap<String, Record>,
    withheld: &mut BTreeMap<String, Withheld>,
    id: &str,
    wanted: Desired,
) {
    desired.remove(id);
    withheld.remove(id);
    match wanted {
        Desired::Registered(record) => {
            desired.insert(id.to_owned(), record);
        }
        Desired::Withheld(reason) => {
            withheld.insert(id.to_owned(), reason);
        }
        Desired::Nothing => {}
    }
}
