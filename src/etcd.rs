//! etcd adapter: the only module that speaks etcd_client. It reads our host's
//! records, applies [`Operation`]s in transactions, keeps the lease alive and
//! watches our prefix for changes made by others. [`RecordsReader`] reads
//! (never writes) every host's records for `list`. Both read a prefix in
//! pages pinned to one revision (`read`: `Connection::read_prefix`), so that
//! no response has to hold the whole prefix.

mod read;

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use tonic::Code;

mod lease;
mod lock;
mod run;

pub use read::{PrefixWatch, RecordsReader};

use crate::config::EtcdSecurity;
use crate::plan::{LeaseId, Observed, Operation};
use crate::record::HostPrefix;
use crate::store::{
    apply_in_batches, CONNECT_TIMEOUT, KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT, REQUEST_TIMEOUT,
};
pub use crate::store::{
    Applied, Campaign, Change, Holder, HolderRun, KeptAlive, LeaseEnd, LockKey, PrefixChanges,
    Snapshot, Store, StoreError,
};

/// etcd's descriptions of the refusals that no retry can change. etcd
/// answers InvalidArgument both for these and for passing conditions (a stale
/// auth revision), and its own Go client tells its errors apart by exactly
/// these descriptions (`rpctypes.ErrorDesc`), so they are matched whole.
const REFUSALS_BY_SIZE: [&str; 2] = [
    "etcdserver: request is too large",
    "etcdserver: too many operations in txn request",
];
/// What every description of etcd's own errors starts with
/// (`rpctypes`); gRPC's and the transport's do not.
const ETCD_ERROR_PREFIX: &str = "etcdserver: ";
/// etcd's description of a lease it does not know (code NotFound).
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

impl From<etcd_client::Error> for StoreError {
    fn from(error: etcd_client::Error) -> Self {
        match &error {
            etcd_client::Error::GRpcStatus(status) => match status.code() {
                Code::NotFound if status.message() == LEASE_NOT_FOUND => StoreError::LeaseNotFound,
                Code::InvalidArgument if REFUSALS_BY_SIZE.contains(&status.message()) => {
                    StoreError::TooLarge(error.to_string())
                }
                Code::PermissionDenied => StoreError::PermissionDenied(error.to_string()),
                // gRPC's own limit on a message (the client's or the
                // server's: "message larger than max") is about this
                // request's size; etcd's own ResourceExhausted answers
                // (NOSPACE, too many requests) are the cluster's trouble and
                // carry etcd's prefix.
                Code::ResourceExhausted if !status.message().starts_with(ETCD_ERROR_PREFIX) => {
                    StoreError::TooLarge(error.to_string())
                }
                _ => StoreError::Failed(error.to_string()),
            },
            etcd_client::Error::LeaseKeepAliveError(message) if message.contains("not found") => {
                StoreError::LeaseNotFound
            }
            _ => StoreError::Failed(error.to_string()),
        }
    }
}

/// A client for one etcd cluster, confined to one host prefix.
pub struct Etcd {
    /// Every request but campaigns: each with the request timeout.
    connection: Connection,
    /// Campaigns for the host lock: no request timeout, so that a standby
    /// waits for the holder with one candidate key and writes nothing more
    /// while nothing changes; a connection that goes silent still ends it
    /// (HTTP/2 keep-alive).
    campaigns: Connection,
    prefix: HostPrefix,
    /// The `--docker-host` we follow, for our candidate key.
    docker_host: String,
}

impl Etcd {
    /// Nothing is connected yet.
    pub fn new(
        endpoints: &[String],
        security: EtcdSecurity,
        prefix: HostPrefix,
        docker_host: String,
    ) -> Self {
        Self {
            connection: Connection::new(endpoints, security.clone(), Some(REQUEST_TIMEOUT)),
            campaigns: Connection::new(endpoints, security, None),
            prefix,
            docker_host,
        }
    }

    async fn client(&mut self) -> Result<&mut Client, StoreError> {
        self.connection.client().await
    }

    /// Every record under our host prefix, with the lease it rides on. The
    /// values are kept: the plan compares them with the desired ones. Keys
    /// that are not UTF-8 cannot be ours, nor be addressed by our `String`
    /// keys: they are left to the operator.
    pub async fn observe(&mut self) -> Result<Snapshot, StoreError> {
        let prefix = self.prefix.as_str().to_owned();
        let read = self
            .connection
            .read_prefix(&prefix, BTreeMap::new, |records, entry| {
                let observed = Observed {
                    value: entry.value.to_vec(),
                    lease: entry.lease,
                };
                records.insert(entry.key.to_owned(), observed);
            })
            .await?;
        Ok(Snapshot {
            records: read.content,
            revision: read.revision,
        })
    }

    /// Applies `operations` in order, in as few transactions as etcd allows
    /// (`store::apply_in_batches`). Puts ride on `lease` (`0`: none).
    pub async fn apply(
        &mut self,
        operations: &[Operation],
        lease: LeaseId,
        fence: Option<&LockKey>,
    ) -> Result<Applied, StoreError> {
        if let Some(outside) = operations.iter().find(|op| !self.prefix.contains(op.key())) {
            return Err(StoreError::OutsidePrefix {
                key: outside.key().to_owned(),
                prefix: self.prefix.as_str().to_owned(),
            });
        }
        apply_in_batches(operations, async |batch: &[Operation]| {
            self.txn(batch, lease, fence).await
        })
        .await
    }

    /// One transaction; with a `fence`, only while that lock key exists as
    /// it was created. The revision it created, if it changed anything: one
    /// that changes nothing (deletes of keys already gone) answers with the
    /// current revision, which may be someone else's write.
    async fn txn(
        &mut self,
        operations: &[Operation],
        lease: LeaseId,
        fence: Option<&LockKey>,
    ) -> Result<Option<i64>, StoreError> {
        let ops: Vec<TxnOp> = operations.iter().map(|op| txn_op(op, lease)).collect();
        let txn = fenced(fence);
        let response = self.client().await?.txn(txn.and_then(ops)).await?;
        if !response.succeeded() {
            return Err(StoreError::LockLost);
        }
        let changed = response.op_responses().iter().any(|op| match op {
            TxnOpResponse::Put(_) => true,
            TxnOpResponse::Delete(deleted) => deleted.deleted() > 0,
            TxnOpResponse::Get(_) | TxnOpResponse::Txn(_) => false,
        });
        Ok(changed
            .then(|| response.header().map(|h| h.revision()))
            .flatten())
    }

    /// Watches our host prefix from `revision` on.
    pub async fn watch(&mut self, revision: i64) -> Result<PrefixWatch, StoreError> {
        let prefix = self.prefix.as_str().to_owned();
        self.connection.watch_prefix(&prefix, revision).await
    }

    /// Removes every record of this host in one transaction, fenced by the
    /// host lock when we hold it (so that a run that lost the host, say
    /// after a pause longer than its lease, cannot delete the next holder's
    /// records), then revokes the lease, which takes the lock key with it.
    pub async fn deregister(
        &mut self,
        lease: Option<LeaseId>,
        fence: Option<&LockKey>,
    ) -> Result<(), StoreError> {
        let prefix = self.prefix.as_str().to_owned();
        let txn = fenced(fence);
        let delete = TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix()));
        let response = self.client().await?.txn(txn.and_then([delete])).await?;
        if !response.succeeded() {
            return Err(StoreError::LockLost);
        }
        // The records are gone; a lease that cannot be revoked now expires
        // by itself, with the lock key on it.
        if let Some(lease) = lease {
            let _ = self.revoke_lease(lease).await;
        }
        Ok(())
    }
}

/// A client for one cluster, connected on first use: with authentication,
/// connecting already asks etcd for a token, and etcd may not be up yet.
struct Connection {
    endpoints: Vec<String>,
    security: EtcdSecurity,
    /// How long one request may take; `None`: as long as it needs.
    request_timeout: Option<Duration>,
    client: Option<Client>,
}

impl Connection {
    fn new(
        endpoints: &[String],
        security: EtcdSecurity,
        request_timeout: Option<Duration>,
    ) -> Self {
        Self {
            endpoints: endpoints.to_vec(),
            security,
            request_timeout,
            client: None,
        }
    }

    async fn client(&mut self) -> Result<&mut Client, StoreError> {
        let client = match self.client.take() {
            Some(client) => client,
            None => {
                let options = connect_options(&self.security, self.request_timeout);
                Client::connect(&self.endpoints, Some(options)).await?
            }
        };
        Ok(self.client.insert(client))
    }
}

fn connect_options(security: &EtcdSecurity, request_timeout: Option<Duration>) -> ConnectOptions {
    let mut options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
    if let Some(timeout) = request_timeout {
        options = options.with_timeout(timeout);
    }
    let mut options = options
        .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
        // A member cut off from its quorum fails our requests and streams
        // instead of serving stale reads and a watch that never fires.
        .with_require_leader(true);
    if let Some(ca) = &security.ca_pem {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = &security.client_identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        options = options.with_tls(tls);
    }
    if let Some(credentials) = &security.credentials {
        options = options
            .with_user(&credentials.user, &credentials.password)
            .with_auto_token_refresh(true);
    }
    options
}

/// A transaction that applies only while the lock key `fence` (if any)
/// exists as it was created: every write of ours is fenced this way.
fn fenced(fence: Option<&LockKey>) -> Txn {
    let txn = Txn::new();
    match fence {
        Some(lock) => txn.when([Compare::create_revision(
            lock.key.clone(),
            CompareOp::Equal,
            lock.revision,
        )]),
        None => txn,
    }
}

fn txn_op(operation: &Operation, lease: LeaseId) -> TxnOp {
    match operation {
        Operation::Put { key, value } => {
            let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
            TxnOp::put(key.as_str(), value.as_str(), options)
        }
        Operation::Delete { key } => TxnOp::delete(key.as_str(), None),
    }
}

/// The store seam, delegating to the adapter's own methods (in this file,
/// `etcd/lease.rs` and `etcd/lock.rs`).
impl Store for Etcd {
    type Watch = PrefixWatch;

    fn lock_name(&self) -> String {
        Etcd::lock_name(self)
    }

    async fn observe(&mut self) -> Result<Snapshot, StoreError> {
        Etcd::observe(self).await
    }

    async fn apply(
        &mut self,
        operations: &[Operation],
        lease: LeaseId,
        fence: Option<&LockKey>,
    ) -> Result<Applied, StoreError> {
        Etcd::apply(self, operations, lease, fence).await
    }

    async fn watch(&mut self, revision: i64) -> Result<PrefixWatch, StoreError> {
        Etcd::watch(self, revision).await
    }

    async fn grant_lease(&mut self, ttl: Duration) -> Result<LeaseId, StoreError> {
        Etcd::grant_lease(self, ttl).await
    }

    async fn keep_alive(
        &mut self,
        lease: LeaseId,
        period: Duration,
    ) -> Result<KeptAlive, StoreError> {
        Etcd::keep_alive(self, lease, period).await
    }

    async fn revoke_lease(&mut self, lease: LeaseId) -> Result<(), StoreError> {
        Etcd::revoke_lease(self, lease).await
    }

    async fn campaign(
        &mut self,
        lease: LeaseId,
        engine: &crate::engine::EngineIdentity,
    ) -> Result<Campaign, StoreError> {
        Etcd::campaign(self, lease, engine).await
    }

    async fn lock_holder(&mut self) -> Result<Option<Holder>, StoreError> {
        Etcd::lock_holder(self).await
    }

    async fn resign(&mut self, key: LockKey) -> Result<(), StoreError> {
        Etcd::resign(self, key).await
    }

    async fn candidates(&mut self) -> Result<Vec<Holder>, StoreError> {
        Etcd::candidates(self).await
    }

    async fn next_in_line(&mut self, ours: LeaseId) -> Result<Option<Holder>, StoreError> {
        Etcd::next_in_line(self, ours).await
    }

    async fn deregister(
        &mut self,
        lease: Option<LeaseId>,
        fence: Option<&LockKey>,
    ) -> Result<(), StoreError> {
        Etcd::deregister(self, lease, fence).await
    }

    fn holder_run(&self, holder: &Holder) -> HolderRun {
        Etcd::holder_run(self, holder)
    }

    async fn take_over(&mut self, holder: &Holder) -> Result<(), StoreError> {
        Etcd::delete_candidate(self, &holder.key, holder.lease, None).await
    }

    async fn take_over_for(
        &mut self,
        holder: &Holder,
        lease: LeaseId,
        engine: &crate::engine::EngineIdentity,
    ) -> Result<(), StoreError> {
        Etcd::delete_candidate(self, &holder.key, holder.lease, Some((lease, engine))).await
    }

    async fn withdraw(&mut self, lease: LeaseId) -> Result<(), StoreError> {
        let key = crate::store::candidate_key(&self.lock_name(), lease);
        Etcd::delete_candidate(self, &key, lease, None).await
    }
}

impl PrefixChanges for PrefixWatch {
    async fn next_changes(&mut self) -> Result<Vec<Change>, StoreError> {
        PrefixWatch::next_changes(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(code: Code, message: &str) -> StoreError {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message)).into()
    }

    #[test]
    fn a_request_over_a_size_limit_is_the_records_trouble_whatever_the_code() {
        for (code, message) in [
            (Code::InvalidArgument, "etcdserver: request is too large"),
            (
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                Code::ResourceExhausted,
                "grpc: received message larger than max (3145777 vs. 2097152)",
            ),
            (
                Code::ResourceExhausted,
                "trying to send message larger than max (3145777 vs. 2097152)",
            ),
        ] {
            assert!(
                matches!(classified(code, message), StoreError::TooLarge(_)),
                "{code:?} {message}"
            );
        }
    }

    #[test]
    fn etcds_own_exhaustion_is_the_clusters_trouble() {
        for message in [
            "etcdserver: mvcc: database space exceeded",
            "etcdserver: too many requests",
        ] {
            assert!(
                matches!(
                    classified(Code::ResourceExhausted, message),
                    StoreError::Failed(_)
                ),
                "{message}"
            );
        }
        assert!(matches!(
            classified(
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old"
            ),
            StoreError::Failed(_)
        ));
    }
}
