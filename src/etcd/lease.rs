//! The agent's lease: granted here, kept alive by a task of its own.
//!
//! The keep-alive runs apart from the agent loop so that nothing the loop
//! waits for (a hung Docker engine, a slow etcd write, a long reconcile) can
//! let the lease, and with it every record of the host, expire.

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::oneshot;
use tokio::time::{interval, sleep_until, timeout_at, Instant, MissedTickBehavior};

use super::{Etcd, KeptAlive, LeaseEnd, StoreError};
use crate::plan::LeaseId;

impl Etcd {
    /// A new lease of `ttl`.
    pub async fn grant_lease(&mut self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        Ok(self.client().await?.lease_grant(ttl, None).await?.id())
    }

    /// Keeps `lease` alive, one keep-alive every `period`, from now on: the
    /// first answer tells whether the lease still exists.
    pub async fn keep_alive(
        &mut self,
        lease: LeaseId,
        period: Duration,
    ) -> Result<KeptAlive, StoreError> {
        let (keeper, responses) = self.client().await?.lease_keep_alive(lease).await?;
        let (report, ended) = oneshot::channel();
        let task = tokio::spawn(async move {
            let end = keep_alive(keeper, responses, period).await;
            let _ = report.send(end);
        });
        Ok(KeptAlive::new(lease, ended, task))
    }

    /// Revokes `lease`: etcd deletes every key on it at once.
    pub async fn revoke_lease(&mut self, lease: LeaseId) -> Result<(), StoreError> {
        match self
            .client()
            .await?
            .lease_revoke(lease)
            .await
            .map_err(StoreError::from)
        {
            Ok(_) | Err(StoreError::LeaseNotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Sends keep-alives until etcd says the lease is gone, the stream breaks,
/// or no keep-alive was answered for the lease's TTL. That last one is what
/// a silent partition looks like (no reset, no error: the stream just goes
/// quiet): etcd expires the lease a TTL after the last keep-alive it
/// received, so once a TTL has passed since the last answered keep-alive
/// was sent, the lease may be gone, and with it the host lock.
async fn keep_alive(
    mut keeper: LeaseKeeper,
    mut responses: LeaseKeepAliveStream,
    period: Duration,
) -> LeaseEnd {
    let mut ticks = interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Opening the stream sent the first keep-alive and took its answer.
    ticks.tick().await;
    // When each keep-alive not answered yet was sent: etcd answers each one,
    // in order.
    let mut unanswered = VecDeque::new();
    // Until the next answer: the period of three keep-alives, which is what
    // the agent chooses the period by.
    let mut expires = Instant::now() + period * 3;
    loop {
        tokio::select! {
            biased;
            () = sleep_until(expires) => return LeaseEnd::Unanswered,
            _ = ticks.tick() => {
                let sending = Instant::now();
                match timeout_at(expires, keeper.keep_alive()).await {
                    Err(_) => return LeaseEnd::Unanswered,
                    Ok(Err(error)) => return LeaseEnd::Broken(error.into()),
                    Ok(Ok(())) => unanswered.push_back(sending),
                }
            }
            answer = responses.message() => match answer {
                Ok(Some(answer)) if answer.ttl() > 0 => {
                    let sent = unanswered.pop_front().unwrap_or_else(Instant::now);
                    let ttl = Duration::from_secs(answer.ttl().unsigned_abs());
                    expires = sent.checked_add(ttl).unwrap_or(expires);
                }
                Ok(Some(_)) => return LeaseEnd::Expired,
                Ok(None) => return LeaseEnd::Broken(StoreError::StreamEnded("lease keep-alive")),
                Err(error) => match StoreError::from(error) {
                    StoreError::LeaseNotFound => return LeaseEnd::Expired,
                    error => return LeaseEnd::Broken(error),
                },
            },
        }
    }
}
