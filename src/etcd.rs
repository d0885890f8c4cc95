//! etcd adapter: the only module that speaks etcd_client. It reads our host's
//! records, applies [`Operation`]s in transactions and keeps the lease alive.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
};

use crate::plan::{LeaseId, Observed, Operation};
use crate::record::HostPrefix;

/// etcd's default `--max-txn-ops`.
const MAX_OPERATIONS_PER_TXN: usize = 128;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd request failed: {0}")]
    Request(#[from] etcd_client::Error),
    #[error("refusing to touch {key:?}: it is outside {prefix:?}")]
    OutsidePrefix { key: String, prefix: String },
    #[error("the lease keep-alive stream ended")]
    KeepAliveEnded,
}

/// A client for one etcd cluster, confined to one host prefix.
pub struct Etcd {
    client: Client,
    prefix: HostPrefix,
}

impl Etcd {
    /// Builds the client; it connects lazily, so an unreachable cluster shows
    /// up as failing requests, not here.
    pub async fn connect(endpoints: &[String], prefix: HostPrefix) -> Result<Self, EtcdError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(Self { client, prefix })
    }

    /// Every record under our host prefix, with the lease it rides on.
    pub async fn observe(&mut self) -> Result<BTreeMap<String, Observed>, EtcdError> {
        let response = self
            .client
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| {
                // A key that is not UTF-8 cannot be one of ours, and cannot be
                // addressed by our String keys: leave it to the operator.
                let key = kv.key_str().ok()?.to_owned();
                let observed = Observed {
                    value: kv.value().to_vec(),
                    lease: kv.lease(),
                };
                Some((key, observed))
            })
            .collect())
    }

    /// Applies `operations` in order, in as few transactions as etcd allows.
    /// Puts ride on `lease` (`0`: none).
    pub async fn apply(
        &mut self,
        operations: &[Operation],
        lease: LeaseId,
    ) -> Result<(), EtcdError> {
        if let Some(outside) = operations.iter().find(|op| !self.prefix.contains(op.key())) {
            return Err(EtcdError::OutsidePrefix {
                key: outside.key().to_owned(),
                prefix: self.prefix.as_str().to_owned(),
            });
        }
        for chunk in operations.chunks(MAX_OPERATIONS_PER_TXN) {
            let ops: Vec<TxnOp> = chunk.iter().map(|op| txn_op(op, lease)).collect();
            self.client.txn(Txn::new().and_then(ops)).await?;
        }
        Ok(())
    }

    pub async fn grant_lease(&mut self, ttl: Duration) -> Result<LeaseId, EtcdError> {
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        Ok(self.client.lease_grant(ttl, None).await?.id())
    }

    /// Opens the keep-alive stream of `lease`; fails when the lease is gone.
    pub async fn keep_alive(&mut self, lease: LeaseId) -> Result<LeaseKeepAlive, EtcdError> {
        let (keeper, responses) = self.client.lease_keep_alive(lease).await?;
        Ok(LeaseKeepAlive { keeper, responses })
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

/// The two halves of a lease's keep-alive stream.
pub struct LeaseKeepAlive {
    keeper: LeaseKeeper,
    responses: LeaseKeepAliveStream,
}

impl LeaseKeepAlive {
    pub fn lease(&self) -> LeaseId {
        self.keeper.id()
    }

    pub async fn send(&mut self) -> Result<(), EtcdError> {
        Ok(self.keeper.keep_alive().await?)
    }

    /// The remaining TTL etcd answered with; `0` means the lease is gone.
    pub async fn next_ttl(&mut self) -> Result<i64, EtcdError> {
        match self.responses.message().await? {
            Some(response) => Ok(response.ttl()),
            None => Err(EtcdError::KeepAliveEnded),
        }
    }
}
