//! What each step of a schedule does to the simulated world.

use std::time::Duration;

use tokio::time::sleep;

use super::World;
use crate::sim::cluster::MAX_REQUEST_BYTES;
use crate::sim::cluster::{Actor, Reach, Write};
use crate::sim::engine::container_id;
use crate::sim::schedule::{Action, ContainerOp, EngineFault, Foreign, StoreFault};

/// A flood: more keys than the first page of a read asks for, and values so
/// large that such a page exceeds the client's response limit.
const FLOOD_KEYS: usize = 40;
const FLOOD_VALUE_BYTES: usize = MAX_REQUEST_BYTES / 2;

impl World {
    pub(super) fn act(&mut self, action: Action) {
        let now = self.now();
        self.history.stimuli.push(now);
        match action {
            Action::Container { index, op } => {
                if matches!(op, ContainerOp::Restart | ContainerOp::KillRestart) {
                    self.engine.operate(index, op);
                    // The record was due to go in between: the truth
                    // passes through its absence.
                    let mut between = self.truth();
                    between.remove(&self.record_key(index));
                    self.history.truth.push((now, between));
                } else {
                    self.engine.operate(index, op);
                }
                self.record_truth();
            }
            Action::Engine { fault, lasting } => {
                let id = self.fault_id();
                self.engine.fault(id, fault);
                let lasting = match fault {
                    EngineFault::DropSubscriptions => Duration::ZERO,
                    _ => lasting,
                };
                self.history.engine_faults.push((now, now + lasting));
                if let EngineFault::SlowInspect { container, delay } = fault {
                    if delay >= Duration::from_secs(10) {
                        let id = container_id(container);
                        self.history.inspect_timeouts.push((id, now, now + lasting));
                    }
                }
                let engine = self.engine.clone();
                tokio::task::spawn_local(async move {
                    sleep(lasting).await;
                    engine.heal(id);
                });
            }
            Action::Store { fault, lasting } => self.store_fault(fault, lasting),
            Action::Foreign(foreign) => self.foreign(foreign),
            Action::StartAgent(slot) => self.start_agent(slot),
            Action::StopAgent(slot) => self.stop_agent(slot),
            Action::KillAgent(slot) => self.kill_agent(slot),
            Action::CrashRestart(slot) => {
                self.kill_agent(slot);
                self.start_agent(slot);
            }
        }
    }

    fn store_fault(&mut self, fault: StoreFault, lasting: Duration) {
        let now = self.now();
        let id = self.fault_id();
        let (slot, reach) = match fault {
            StoreFault::Refused { agent } => (Some(agent), Reach::Refused),
            StoreFault::Blackhole { agent } => (Some(agent), Reach::Blackhole),
            StoreFault::Slow { agent, delay } => (Some(agent), Reach::Slow(delay)),
            StoreFault::NoSpace => {
                self.cluster.set_nospace(id, true);
                self.history.store_faults.push((None, now, now + lasting));
                self.heal_later(id, lasting);
                return;
            }
            StoreFault::RevokeLease { agent } | StoreFault::ExpireLease { agent } => {
                let processes: Vec<usize> = self.agents[agent].iter().map(|p| p.id).collect();
                for process in processes {
                    for lease in self.cluster.leases_of(process) {
                        self.cluster.end_lease(lease, Actor::Foreign);
                    }
                }
                return;
            }
            StoreFault::Compact => return self.cluster.compact(),
            StoreFault::CancelWatches => return self.cluster.cancel_watches(),
        };
        self.cluster.add_reach(slot.unwrap_or(0), id, reach);
        self.history.store_faults.push((slot, now, now + lasting));
        self.heal_later(id, lasting);
    }

    fn heal_later(&self, id: u64, lasting: Duration) {
        let cluster = self.cluster.clone();
        tokio::task::spawn_local(async move {
            sleep(lasting).await;
            cluster.heal(id);
        });
    }

    /// Container `index`'s record key, whether or not it has a record.
    fn record_key(&self, index: usize) -> String {
        let id = container_id(index);
        let kind = crate::sim::engine::KINDS[index % crate::sim::engine::KINDS.len()];
        let image = format!("sim/{kind:?}:1").to_ascii_lowercase();
        let image_id = format!("sha256:{:064x}", kind as u64 + 1);
        let segment = crate::image::key_segment(&image, &image_id);
        format!("{}{segment}/{id}", self.prefix.as_str())
    }

    fn foreign(&mut self, foreign: Foreign) {
        if foreign == Foreign::Flood {
            // One transaction per key: together they exceed a request.
            for _ in 0..FLOOD_KEYS {
                let write = self.junk_put(vec![b' '; FLOOD_VALUE_BYTES]);
                let _ = self.cluster.txn(Actor::Foreign, &[write], 0, None);
            }
            return;
        }
        let write = match foreign {
            Foreign::Overwrite { container } => {
                Write::Put(self.record_key(container), b"[]".to_vec())
            }
            Foreign::Delete { container } => Write::Delete(self.record_key(container)),
            Foreign::Junk => self.junk_put(b"[]".to_vec()),
            Foreign::Neighbour => Write::Put(
                "/registered/10.0.0.50/other::1/abc".to_owned(),
                b"[]".to_vec(),
            ),
            Foreign::Flood => unreachable!("written above"),
        };
        let _ = self.cluster.txn(Actor::Foreign, &[write], 0, None);
    }

    /// A put of a new key under our prefix that no container backs.
    fn junk_put(&mut self, value: Vec<u8>) -> Write {
        self.junk += 1;
        let key = format!("{}junk::1/{:064x}", self.prefix.as_str(), self.junk);
        Write::Put(key, value)
    }

    pub(super) fn heal_all(&mut self) {
        self.engine.heal_all();
        self.engine.finish_stops();
        self.record_truth();
        self.cluster.heal_all();
        let now = self.now();
        for window in &mut self.history.engine_faults {
            window.1 = window.1.min(now);
        }
        for window in &mut self.history.store_faults {
            window.2 = window.2.min(now);
        }
        for window in &mut self.history.inspect_timeouts {
            window.2 = window.2.min(now);
        }
        self.cluster.trace("faults healed".into());
    }
}
