//! The host lock as etcd's concurrency election keeps it: a candidate key
//! per lease under the lock name, the oldest one holds.

use super::{reach_then, Actor, Cluster, Holder, LeaseId, LockKey, Reach, StoreError, Write};
use crate::engine::EngineIdentity;
use crate::store::{KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT};
use tokio::time::sleep;

/// The oldest candidate under `candidates`, as etcd's election sees it.
pub(super) fn oldest(cluster: &Cluster, candidates: &str) -> Option<Holder> {
    next_in_line(cluster, candidates, LeaseId::MIN)
}

/// The oldest candidate under `candidates` but the one on `ours`.
pub(super) fn next_in_line(cluster: &Cluster, candidates: &str, ours: LeaseId) -> Option<Holder> {
    in_line(cluster, candidates, usize::MAX)
        .into_iter()
        .find(|holder| holder.lease != ours)
}

/// The first `limit` candidates under `candidates`, oldest first.
pub(super) fn in_line(cluster: &Cluster, candidates: &str, limit: usize) -> Vec<Holder> {
    let state = cluster.lock();
    let mut line: Vec<_> = state
        .kv
        .range(candidates.to_owned()..)
        .take_while(|(key, _)| key.starts_with(candidates))
        .collect();
    line.sort_by_key(|(_, kv)| kv.create_revision);
    line.into_iter()
        .take(limit)
        .map(|(key, kv)| {
            let value = serde_json::from_slice::<serde_json::Value>(&kv.value).unwrap_or_default();
            Holder {
                engine: value["engine"].as_str().and_then(EngineIdentity::parse),
                key: key.clone(),
                lease: kv.lease,
                hostname: value["hostname"].as_str().unwrap_or_default().to_owned(),
                pid: value["pid"]
                    .as_u64()
                    .and_then(|pid| u32::try_from(pid).ok())
                    .unwrap_or(0),
                boot_id: String::new(),
                started: 0,
                pid_ns: String::new(),
                docker_host: value["docker_host"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// etcd's concurrency election: put our key if absent, then wait until
/// every older candidate is gone. As the adapter's campaigns, it has no
/// request timeout: it ends when it wins, or when the connection is lost,
/// which the keep-alive tells within its interval and timeout.
pub(super) async fn campaign(
    cluster: Cluster,
    client: usize,
    actor: Actor,
    candidates: String,
    lease: LeaseId,
    value: serde_json::Value,
) -> Result<Option<LockKey>, StoreError> {
    let key = crate::store::candidate_key(candidates.trim_end_matches('/'), lease);
    let created = reach_then(&cluster, client, |c| {
        if let Some(kv) = c.lock().kv.get(&key) {
            return Ok(kv.create_revision);
        }
        let value = value.to_string().into_bytes();
        let put = c.txn(actor, &[Write::Put(key.clone(), value)], lease, None)?;
        Ok(put.expect("a put always creates a revision"))
    })
    .await?;
    loop {
        let changed = cluster.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if matches!(cluster.reach(client), Reach::Refused | Reach::Blackhole) {
            return Err(StoreError::Failed("connection lost".into()));
        }
        let older = {
            let state = cluster.lock();
            state
                .kv
                .range(candidates.clone()..)
                .take_while(|(k, _)| k.starts_with(&candidates))
                .any(|(_, kv)| kv.create_revision < created)
        };
        if !older {
            break;
        }
        tokio::select! {
            biased;
            () = changed => {}
            () = sleep(KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT) => {}
        }
    }
    cluster.trace(format!("{actor:?} won the lock on {lease:x}"));
    Ok(Some(LockKey {
        name: candidates.trim_end_matches('/').as_bytes().to_vec(),
        key: key.into_bytes(),
        revision: created,
        lease,
    }))
}
