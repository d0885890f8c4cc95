//! One agent process's connection to the simulated cluster: the `Store`
//! seam with the etcd adapter's behaviour (etcd.rs and etcd/ show it):
//! operations batched within etcd's limits and a batch
//! refused as too large split into single operations, the election of
//! etcd's concurrency package (a candidate key per lease, the oldest holds,
//! a campaign that times out after the client's 5 s withdraws its key), a
//! keep-alive task that reports once how the lease ended.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep;

use super::cluster::{Actor, Cluster, Reach, Write};
use super::records::{read_pages, watch};
use crate::engine::EngineIdentity;
use crate::plan::{LeaseId, Observed, Operation};
use crate::record::HostPrefix;
use crate::store::paging::Entry;
use crate::store::REQUEST_TIMEOUT;
use crate::store::{
    apply_in_batches, Applied, Campaign, Change, Holder, HolderRun, KeptAlive, LeaseEnd, LockKey,
    PrefixChanges, Snapshot, Store, StoreError,
};

mod election;
use election::{campaign, in_line, next_in_line, oldest};

/// Agent process `client`'s store.
pub struct SimStore {
    cluster: Cluster,
    /// The agent slot: whose connection faults apply.
    client: usize,
    /// This process (one per start of a slot): the author of its writes.
    process: usize,
    /// The machine it runs on: the host name in its candidate key; a run on
    /// the same machine can tell whether the holder's process still runs.
    machine: String,
    prefix: HostPrefix,
}

impl SimStore {
    pub fn new(
        cluster: Cluster,
        client: usize,
        process: usize,
        machine: String,
        prefix: HostPrefix,
    ) -> Self {
        Self {
            cluster,
            client,
            process,
            machine,
            prefix,
        }
    }

    fn actor(&self) -> Actor {
        Actor::Agent(self.process)
    }

    /// What our candidate key says of us, as the adapter's says it.
    fn candidate_value(&self, engine: &EngineIdentity) -> serde_json::Value {
        serde_json::json!({
            "hostname": self.machine,
            "pid": self.process,
            "docker_host": super::run::DOCKER_HOST,
            "engine": engine.as_str(),
        })
    }

    fn candidate_prefix(&self) -> String {
        format!("{}/", lock_name(&self.prefix))
    }

    /// Deletes candidate key `key` if it is still on `lease`; with `ours`
    /// (our lease and engine), puts our candidate key in the same
    /// transaction, as the adapter does for a take-over.
    async fn delete_candidate(
        &self,
        what: &str,
        key: String,
        lease: LeaseId,
        ours: Option<(LeaseId, &EngineIdentity)>,
    ) -> Result<(), StoreError> {
        let actor = self.actor();
        let mut writes = vec![Write::Delete(key.clone())];
        let mut put_lease = 0;
        if let Some((our_lease, engine)) = ours {
            let our_key = crate::store::candidate_key(&lock_name(&self.prefix), our_lease);
            let value = self.candidate_value(engine).to_string().into_bytes();
            writes.push(Write::Put(our_key, value));
            put_lease = our_lease;
        }
        self.request(what, |c| {
            let its = c.lock().kv.get(&key).is_some_and(|kv| kv.lease == lease);
            if its {
                c.txn(actor, &writes, put_lease, None)?;
            }
            Ok(())
        })
        .await
    }

    fn trace(&self, line: String) {
        self.cluster
            .trace(format!("Agent({}) {line}", self.process));
    }

    /// Runs `request` against the cluster as the client's connection
    /// allows: at once, slowly (half the delay before etcd applies it, half
    /// after), or not at all.
    async fn request<T>(
        &self,
        what: &str,
        request: impl FnOnce(&Cluster) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let answer = reach_then(&self.cluster, self.client, request).await;
        if let Err(error) = &answer {
            self.trace(format!("{what} failed: {error}"));
        }
        answer
    }
}

pub use crate::store::lock_name;

pub async fn reach_then<T>(
    cluster: &Cluster,
    client: usize,
    request: impl FnOnce(&Cluster) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match cluster.reach(client) {
        Reach::Up => request(cluster),
        Reach::Refused => Err(StoreError::Failed("connection refused".into())),
        Reach::Blackhole => {
            sleep(REQUEST_TIMEOUT).await;
            Err(StoreError::Failed("deadline exceeded".into()))
        }
        Reach::Slow(delay) => {
            sleep(delay / 2).await;
            if matches!(cluster.reach(client), Reach::Refused | Reach::Blackhole) {
                return Err(StoreError::Failed("connection lost".into()));
            }
            let answer = request(cluster);
            if delay > REQUEST_TIMEOUT {
                // Applied, but the answer comes too late: the client gave
                // up (an ambiguous outcome, as with a real timeout).
                sleep(REQUEST_TIMEOUT.saturating_sub(delay / 2)).await;
                return Err(StoreError::Failed("deadline exceeded".into()));
            }
            sleep(delay / 2).await;
            answer
        }
    }
}

fn write_of(operation: &Operation) -> Write {
    match operation {
        Operation::Put { key, value } => Write::Put(key.clone(), value.as_bytes().to_vec()),
        Operation::Delete { key } => Write::Delete(key.clone()),
    }
}

/// The watch on a prefix.
pub struct SimWatch {
    changes: mpsc::UnboundedReceiver<Result<Vec<Change>, StoreError>>,
}

impl SimWatch {
    pub fn new(changes: mpsc::UnboundedReceiver<Result<Vec<Change>, StoreError>>) -> Self {
        Self { changes }
    }
}

impl PrefixChanges for SimWatch {
    async fn next_changes(&mut self) -> Result<Vec<Change>, StoreError> {
        match self.changes.recv().await {
            Some(changes) => changes,
            None => Err(StoreError::StreamEnded("watch")),
        }
    }
}

impl Store for SimStore {
    type Watch = SimWatch;

    fn lock_name(&self) -> String {
        lock_name(&self.prefix)
    }

    async fn observe(&mut self) -> Result<Snapshot, StoreError> {
        let prefix = self.prefix.as_str().to_owned();
        let fold = |records: &mut BTreeMap<String, Observed>, entry: Entry<'_>| {
            let observed = Observed {
                value: entry.value.to_vec(),
                lease: entry.lease,
            };
            records.insert(entry.key.to_owned(), observed);
        };
        let (read, pages) =
            match read_pages(&self.cluster, self.client, &prefix, BTreeMap::new, fold).await {
                Ok(read) => read,
                Err(error) => {
                    self.trace(format!("range failed: {error}"));
                    return Err(error);
                }
            };
        let (records, revision) = (read.content.len(), read.revision);
        self.trace(format!(
            "observed {records} records at r{revision} in {pages} requests"
        ));
        Ok(Snapshot {
            records: read.content,
            revision: read.revision,
        })
    }

    async fn apply(
        &mut self,
        operations: &[Operation],
        lease: LeaseId,
        fence: Option<&LockKey>,
    ) -> Result<Applied, StoreError> {
        if let Some(outside) = operations.iter().find(|op| !self.prefix.contains(op.key())) {
            let key = outside.key().to_owned();
            self.cluster
                .lock()
                .outside_prefix_attempts
                .push((self.process, key.clone()));
            return Err(StoreError::OutsidePrefix {
                key,
                prefix: self.prefix.as_str().to_owned(),
            });
        }
        let actor = self.actor();
        apply_in_batches(operations, async |batch: &[Operation]| {
            let writes: Vec<Write> = batch.iter().map(write_of).collect();
            self.request("txn", |c| c.txn(actor, &writes, lease, fence))
                .await
        })
        .await
    }

    async fn watch(&mut self, revision: i64) -> Result<SimWatch, StoreError> {
        let prefix = self.prefix.as_str().to_owned();
        match watch(&self.cluster, self.client, &prefix, revision).await {
            Ok((watch, compacted)) => {
                let compacted = if compacted { " (compacted)" } else { "" };
                self.trace(format!("watch from r{revision}{compacted}"));
                Ok(watch)
            }
            Err(error) => {
                self.trace(format!("watch failed: {error}"));
                Err(error)
            }
        }
    }

    async fn grant_lease(&mut self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let process = self.process;
        self.request("grant", |c| c.grant(process, ttl)).await
    }

    async fn keep_alive(
        &mut self,
        lease: LeaseId,
        period: Duration,
    ) -> Result<KeptAlive, StoreError> {
        self.request("keep-alive", |_| Ok(())).await?;
        self.trace(format!("keep-alive {lease:x}"));
        let (report, ended) = oneshot::channel();
        let (cluster, client) = (self.cluster.clone(), self.client);
        let task = tokio::spawn(async move {
            let end = keep_alive(cluster, client, lease, period).await;
            let _ = report.send(end);
        });
        Ok(KeptAlive::new(lease, ended, task))
    }

    async fn revoke_lease(&mut self, lease: LeaseId) -> Result<(), StoreError> {
        let actor = self.actor();
        self.request("revoke", |c| {
            c.end_lease(lease, actor);
            Ok(())
        })
        .await
    }

    async fn campaign(
        &mut self,
        lease: LeaseId,
        engine: &EngineIdentity,
    ) -> Result<Campaign, StoreError> {
        let (cluster, client, actor) = (self.cluster.clone(), self.client, self.actor());
        let candidates = self.candidate_prefix();
        let value = self.candidate_value(engine);
        Ok(async move { campaign(cluster, client, actor, candidates, lease, value).await }.boxed())
    }

    async fn lock_holder(&mut self) -> Result<Option<Holder>, StoreError> {
        let candidates = self.candidate_prefix();
        let holder = self
            .request("lock holder", |c| Ok(oldest(c, &candidates)))
            .await?;
        let lease = holder.as_ref().map(|h| h.lease);
        self.trace(format!("lock holder on {lease:x?}"));
        Ok(holder)
    }

    async fn candidates(&mut self) -> Result<Vec<Holder>, StoreError> {
        let candidates = self.candidate_prefix();
        self.request("candidates", |c| {
            Ok(in_line(c, &candidates, crate::store::CANDIDATES_LOOKED_AT))
        })
        .await
    }

    async fn next_in_line(&mut self, ours: LeaseId) -> Result<Option<Holder>, StoreError> {
        let candidates = self.candidate_prefix();
        self.request("next in line", |c| Ok(next_in_line(c, &candidates, ours)))
            .await
    }

    async fn resign(&mut self, key: LockKey) -> Result<(), StoreError> {
        let actor = self.actor();
        let candidate = String::from_utf8_lossy(&key.key).into_owned();
        self.request("resign", |c| {
            let ours = c
                .lock()
                .kv
                .get(&candidate)
                .is_some_and(|kv| kv.create_revision == key.revision);
            if ours {
                c.txn(actor, &[Write::Delete(candidate.clone())], 0, None)?;
            }
            Ok(())
        })
        .await
    }

    /// A run on the holder's machine sees whether its process still runs;
    /// one on another machine cannot tell.
    fn holder_run(&self, holder: &Holder) -> HolderRun {
        if holder.hostname != self.machine {
            return HolderRun::Unknown;
        }
        let pid = usize::try_from(holder.pid).unwrap_or(usize::MAX);
        if self.cluster.lock().running.contains(&pid) {
            HolderRun::AliveHere
        } else {
            HolderRun::Gone
        }
    }

    async fn take_over(&mut self, holder: &Holder) -> Result<(), StoreError> {
        self.delete_candidate("take over", holder.key.clone(), holder.lease, None)
            .await
    }

    async fn take_over_for(
        &mut self,
        holder: &Holder,
        lease: LeaseId,
        engine: &EngineIdentity,
    ) -> Result<(), StoreError> {
        let ours = Some((lease, engine));
        self.delete_candidate("take over", holder.key.clone(), holder.lease, ours)
            .await
    }

    async fn withdraw(&mut self, lease: LeaseId) -> Result<(), StoreError> {
        let key = crate::store::candidate_key(&lock_name(&self.prefix), lease);
        self.delete_candidate("withdraw", key, lease, None).await
    }

    async fn deregister(
        &mut self,
        lease: Option<LeaseId>,
        fence: Option<&LockKey>,
    ) -> Result<(), StoreError> {
        let (actor, prefix) = (self.actor(), self.prefix.as_str().to_owned());
        self.request("deregister", |c| {
            c.txn(actor, &[Write::DeletePrefix(prefix)], 0, fence)
                .map(drop)
        })
        .await?;
        if let Some(lease) = lease {
            let _ = self.revoke_lease(lease).await;
        }
        Ok(())
    }
}

/// The keep-alive task: one keep-alive at once, then one every `period`.
async fn keep_alive(cluster: Cluster, client: usize, lease: LeaseId, period: Duration) -> LeaseEnd {
    loop {
        let kept = reach_then(&cluster, client, |c| Ok(c.refresh(lease))).await;
        match kept {
            Ok(Some(_)) => {}
            Ok(None) => return LeaseEnd::Expired,
            Err(error) => return LeaseEnd::Broken(error),
        }
        sleep(period).await;
    }
}
