//! A three-member etcd cluster on loopback, for the faults a single member
//! cannot show (a member lost, the quorum kept).

use std::time::Duration;

use super::server::{Etcd, EtcdError};
use crate::unique_id;

/// How long the members of a new cluster (or a member that rejoins) may
/// take to answer linearizable reads.
const QUORUM_TIMEOUT: Duration = Duration::from_secs(30);

/// A three-member etcd cluster on loopback; each member can be stopped and
/// restarted with its data directory.
pub struct EtcdCluster {
    /// The members in the order of `--initial-cluster`.
    members: Vec<Etcd>,
}

impl EtcdCluster {
    /// Three members on ports of the tests' own (`crate::ports`): started
    /// once, since nothing else can take their ports.
    pub fn start() -> EtcdCluster {
        EtcdCluster::try_start().unwrap_or_else(|e| panic!("etcd cluster did not start: {e}"))
    }

    fn try_start() -> Result<EtcdCluster, EtcdError> {
        let mut members: Vec<Etcd> = (0..3).map(|_| Etcd::reserve()).collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = unique_id("cluster");
        for m in &mut members {
            m.cluster = Some((initial.clone(), token.clone()));
            m.spawn()?;
        }
        let mut cluster = EtcdCluster { members };
        cluster
            .members
            .iter_mut()
            .try_for_each(|m| m.wait_answering(QUORUM_TIMEOUT))?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Client endpoints of all members, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Etcd::endpoint).collect()
    }

    /// All endpoints comma-separated, as `--etcd-endpoints` takes them.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// The endpoint of the first member that runs.
    pub fn live_endpoint(&self) -> String {
        self.members
            .iter()
            .find(|m| m.is_running())
            .map(Etcd::endpoint)
            .expect("no etcd member is running")
    }

    /// Kills member `i` (SIGKILL).
    pub fn stop(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// Starts member `i` again with its data and waits until it is healthy:
    /// it answers linearizable reads, so it has rejoined the quorum.
    pub fn restart(&mut self, i: usize) {
        let member = &mut self.members[i];
        member.stop();
        member
            .spawn()
            .and_then(|()| member.wait_answering(QUORUM_TIMEOUT))
            .unwrap_or_else(|e| panic!("etcd member {i} did not rejoin: {e}"));
    }
}
