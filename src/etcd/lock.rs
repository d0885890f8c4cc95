//! The host lock: at most one agent writes a host's prefix at a time.
//!
//! Agents of one host campaign in etcd's election API under a name outside
//! the records' root, `/docker-etcd-register/agents{prefix}/{host_ip}`, so
//! that consumers reading the records never see it. etcd keeps one key per
//! candidate, `{name}/{lease in hex}`, on the candidate's lease; the oldest
//! one holds the lock. A holder that exits resigns (its key goes at once); one
//! that dies loses its key with its lease, unless the next run of the agent
//! on its machine takes it over first (`run.rs`).

use etcd_client::{
    Compare, CompareOp, GetOptions, LeaderKey, PutOptions, ResignOptions, SortOrder, SortTarget,
    Txn, TxnOp,
};
use futures_util::FutureExt;
use tonic::Code;

use super::run::Candidate;
use super::{Campaign, Etcd, Holder, HolderRun, LockKey, StoreError};
use crate::engine::EngineIdentity;
use crate::plan::LeaseId;
use crate::store::CANDIDATES_LOOKED_AT;

impl Etcd {
    /// The election name of our host.
    pub fn lock_name(&self) -> String {
        crate::store::lock_name(&self.prefix)
    }

    /// Starts campaigning for our host's lock on `lease`.
    pub async fn campaign(
        &mut self,
        lease: LeaseId,
        engine: &EngineIdentity,
    ) -> Result<Campaign, StoreError> {
        let mut election = self.campaigns.client().await?.election_client();
        let name = self.lock_name();
        let value = self.candidate_value(engine);
        Ok(async move {
            match election.campaign(name, value, lease).await {
                Ok(mut response) => Ok(response.take_leader().map(|leader| LockKey {
                    name: leader.name().to_vec(),
                    key: leader.key().to_vec(),
                    revision: leader.rev(),
                    lease: leader.lease(),
                })),
                // The client's request timeout ends a long wait: the holder
                // is still there. etcd withdrew our candidacy; campaign again.
                Err(etcd_client::Error::GRpcStatus(status))
                    if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled) =>
                {
                    Ok(None)
                }
                Err(error) => Err(error.into()),
            }
        }
        .boxed())
    }

    /// What our candidate key says of us.
    fn candidate_value(&self, engine: &EngineIdentity) -> Vec<u8> {
        let candidate = Candidate {
            engine: engine.as_str().to_owned(),
            host_ip: self.prefix.host_ip().to_string(),
            prefix: self.prefix.as_str().to_owned(),
            docker_host: self.docker_host.clone(),
            ..Candidate::this_process()
        };
        serde_json::to_vec(&candidate).unwrap_or_default()
    }

    /// Who holds our host's lock (the oldest candidate), if anyone.
    pub async fn lock_holder(&mut self) -> Result<Option<Holder>, StoreError> {
        // No candidate is on a lease etcd never grants.
        self.next_in_line(i64::MIN).await
    }

    /// The oldest candidate but the one on `ours` (our own key is one of
    /// the two oldest while we hold the lock).
    pub async fn next_in_line(&mut self, ours: i64) -> Result<Option<Holder>, StoreError> {
        Ok(self
            .line(2)
            .await?
            .into_iter()
            .find(|holder| holder.lease != ours))
    }

    /// The candidates, oldest first (at most `CANDIDATES_LOOKED_AT`).
    pub async fn candidates(&mut self) -> Result<Vec<Holder>, StoreError> {
        self.line(CANDIDATES_LOOKED_AT as i64).await
    }

    /// The `limit` oldest candidates, oldest first.
    async fn line(&mut self, limit: i64) -> Result<Vec<Holder>, StoreError> {
        let candidates = format!("{}/", self.lock_name());
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(limit);
        let response = self.client().await?.get(candidates, Some(options)).await?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                Candidate::holder(key, kv.lease(), kv.value())
            })
            .collect())
    }

    /// What this machine can tell of `holder`'s process (`run.rs`).
    pub fn holder_run(&self, holder: &Holder) -> HolderRun {
        Candidate::this_process().holder_run(holder)
    }

    /// Removes the candidate key `key` if it is still on `lease`: a gone
    /// previous run's (our campaign then holds at once), or our own when we
    /// withdraw. The lease and the records on it stay, to be moved onto the
    /// holder's in place. With `ours` (our lease and engine), puts our own
    /// candidate key in the same transaction, as etcd's election would
    /// (`{name}/{lease in hex}`): a take-over never leaves the lock free
    /// for another engine's agent, and the campaign that follows finds the
    /// key and holds once no older one is left.
    pub async fn delete_candidate(
        &mut self,
        key: &str,
        lease: i64,
        ours: Option<(i64, &EngineIdentity)>,
    ) -> Result<(), StoreError> {
        let mut operations = vec![TxnOp::delete(key, None)];
        if let Some((our_lease, engine)) = ours {
            let our_key = crate::store::candidate_key(&self.lock_name(), our_lease);
            let put = PutOptions::new().with_lease(our_lease);
            operations.push(TxnOp::put(our_key, self.candidate_value(engine), Some(put)));
        }
        let txn = Txn::new()
            .when([Compare::lease(key, CompareOp::Equal, lease)])
            .and_then(operations);
        self.client().await?.txn(txn).await?;
        Ok(())
    }

    /// Gives the lock up: the next candidate holds it at once.
    pub async fn resign(&mut self, key: LockKey) -> Result<(), StoreError> {
        let leader = LeaderKey::new()
            .with_name(key.name)
            .with_key(key.key)
            .with_rev(key.revision)
            .with_lease(key.lease);
        let options = ResignOptions::new().with_leader(leader);
        self.client()
            .await?
            .election_client()
            .resign(Some(options))
            .await?;
        Ok(())
    }
}
