//! The faults of the simulated cluster: how each agent's connection reaches
//! it (up, refused, lost, slow), and the NOSPACE alarm.

use super::{Cluster, Reach};
use crate::store::StoreError;

impl Cluster {
    pub fn add_reach(&self, client: usize, id: u64, reach: Reach) {
        let mut state = self.lock();
        state.reach.entry(client).or_default().insert(id, reach);
        if matches!(reach, Reach::Refused | Reach::Blackhole) {
            // The connection is gone: its streams break.
            state.watches.retain(|watch| {
                if watch.client == client {
                    let _ = watch
                        .sender
                        .send(Err(StoreError::Failed("connection lost".into())));
                    false
                } else {
                    true
                }
            });
        }
        drop(state);
        self.bump();
    }

    pub fn set_nospace(&self, id: u64, on: bool) {
        let mut state = self.lock();
        if on {
            state.nospace.insert(id);
        } else {
            state.nospace.remove(&id);
        }
        drop(state);
        self.bump();
    }

    pub fn heal(&self, id: u64) {
        let mut state = self.lock();
        for faults in state.reach.values_mut() {
            faults.remove(&id);
        }
        state.nospace.remove(&id);
        drop(state);
        self.bump();
    }

    pub fn heal_all(&self) {
        let mut state = self.lock();
        state.reach.clear();
        state.nospace.clear();
        drop(state);
        self.bump();
    }

    /// How `client` reaches the cluster now: the worst of its faults.
    pub fn reach(&self, client: usize) -> Reach {
        let state = self.lock();
        let faults = state.reach.get(&client);
        let mut reach = Reach::Up;
        for fault in faults.into_iter().flat_map(|f| f.values()) {
            reach = match (reach, *fault) {
                (Reach::Refused, _) | (_, Reach::Refused) => Reach::Refused,
                (Reach::Blackhole, _) | (_, Reach::Blackhole) => Reach::Blackhole,
                (Reach::Slow(a), Reach::Slow(b)) => Reach::Slow(a.max(b)),
                (Reach::Up, other) | (other, Reach::Up) => other,
            };
        }
        reach
    }
}

pub fn no_space() -> StoreError {
    StoreError::Failed("etcdserver: mvcc: database space exceeded".into())
}
