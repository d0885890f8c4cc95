//! Keeping our prefix in etcd equal to the desired records: the repair
//! after any trouble, the writes, the watch on foreign changes, `--once`.

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::claim::{Claim, EngineSeen};
use super::etcd_view::{EtcdView, PrefixWatch};
use super::tenure::{HostLock, Lease};
use super::{Agent, Progress};
use crate::plan::{self, LeaseId, Operation};
use crate::record::HostPrefix;
use crate::store::{Change, HolderRun, Store, StoreError};
use crate::watcher::Observation;

impl<S: Store> Agent<S> {
    /// Brings etcd back in line: the lease, the lock, then our prefix. On
    /// failure, schedules the next attempt.
    pub(super) async fn repair(&mut self) {
        let started = Instant::now();
        match self.repair_etcd().await {
            Ok(()) => self.etcd_health.recovered(),
            Err(error) => {
                self.etcd_failed(error);
                self.metrics.reconcile_failed();
                if self.progress == Progress::Exact {
                    self.progress = Progress::Behind;
                }
                self.retry.schedule();
                return;
            }
        }
        if matches!(self.tenure.lock(), Some(HostLock::Free)) && self.engine.identity().is_none() {
            // Waiting for the engine to say which one it is: the holder is
            // looked at again after a backoff, not in a loop.
            self.retry.schedule();
            return;
        }
        self.retry.reset();
        if self.may_write() && self.etcd_view.is_current() {
            self.metrics.reconciled(started.elapsed());
            if self.progress == Progress::NotYet {
                info!(records = self.wanted.len(), "agent ready");
            }
            self.progress = Progress::Exact;
        }
    }

    pub(super) async fn repair_etcd(&mut self) -> Result<(), StoreError> {
        if self.tenure.lease().is_some_and(Lease::needs_work) {
            self.resume_or_grant_lease().await?;
        }
        // No campaign before the engine has said which one it is (our lock
        // key names it), unless our previous run held the host.
        if let (Some(HostLock::Free), Some(lease)) = (self.tenure.lock(), self.tenure.held_id()) {
            let engine = match &self.engine {
                EngineSeen::Answered(engine) => engine.clone(),
                _ => match self.assume_previous_engine().await? {
                    Some(engine) => engine,
                    // Looked at again after a backoff (`repair`), or at once
                    // when the engine answers.
                    None => return Ok(()),
                },
            };
            match self.claim_host(lease, &engine).await {
                Ok(Claim::Conflict(holder)) => self.conflict(holder, &engine),
                Ok(_) => {
                    self.no_conflict();
                    let campaign = self.store.campaign(lease, &engine).await?;
                    self.tenure.set_lock(HostLock::Waiting(campaign));
                }
                Err(error) if error.is_permission_denied() => self.lock_refused(&error),
                Err(error) => return Err(error),
            }
        }
        if (self.may_write() || self.may_keep())
            && (!self.etcd_view.is_current() || self.watch.is_none())
        {
            self.sync_etcd().await?;
        }
        Ok(())
    }

    /// Makes our prefix equal to the desired records, from a fresh read.
    pub(super) async fn sync_etcd(&mut self) -> Result<(), StoreError> {
        self.etcd_view = EtcdView::Stale;
        let snapshot = self.store.observe().await?;
        if self.watch.is_none() {
            let stream = self.store.watch(snapshot.revision + 1).await?;
            self.watch = Some(PrefixWatch::new(stream));
        }
        self.metrics.set_records(snapshot.records.len());
        let desired = if self.wanted.is_listed() {
            self.wanted.by_key(&self.config.host, &snapshot.records)
        } else {
            // Not listed yet: keep the records of the runs we took the host
            // over from as they are, on our lease.
            plan::as_they_are(&self.config.host, &snapshot.records, &self.previous_leases)
        };
        let mut operations = plan::plan(&desired, &snapshot.records, self.lease_policy());
        if !self.wanted.is_listed() {
            // Nothing is deleted before the engine has been listed.
            operations.retain(|operation| matches!(operation, Operation::Put { .. }));
        }
        self.etcd_view = EtcdView::Current {
            records: snapshot.records,
            read_revision: snapshot.revision,
        };
        // A failure makes the view stale again (`etcd_failed`).
        self.apply(&operations).await
    }

    /// Watch events: our own writes are expected; anything else under our
    /// prefix (a foreign delete or overwrite, an expired lease) means etcd
    /// no longer holds what we believe, so reconcile, at once unless someone
    /// keeps changing it.
    pub(super) fn notice_changes(&mut self, changes: &[Change]) {
        // A change the last read already saw (the watch lags behind it, say
        // after a burst delivered in fragments) needs no repair.
        let Some(watch) = &mut self.watch else {
            return;
        };
        let foreign: Vec<&Change> = changes
            .iter()
            .filter(|change| !self.etcd_view.has_seen(change.revision))
            .filter(|change| !watch.is_own(change.revision))
            .collect();
        if let Some(latest) = changes.iter().map(|c| c.revision).max() {
            watch.seen_up_to(latest);
        }
        let Some(last) = foreign.last() else {
            return;
        };
        for change in &foreign {
            debug!(
                key = change.key,
                revision = change.revision,
                deleted = change.deleted(),
                "foreign change"
            );
        }
        if !self.etcd_view.is_current() || self.retry.is_scheduled() {
            // A repair is already on its way; it covers this too. Until it
            // comes, our own writes are planned against what the watch told.
            self.etcd_view.disturb(&foreign);
            return;
        }
        let delay = self.repairs.next_repair(Instant::now());
        self.metrics.repairing();
        if delay.is_zero() {
            info!(
                key = last.key,
                revision = last.revision,
                deleted = last.deleted(),
                "record changed by someone else; reconciling"
            );
            self.etcd_view = EtcdView::Stale;
        } else {
            warn!(
                key = last.key,
                delay_ms = delay.as_millis() as u64,
                "a record here keeps being changed by someone else; repairing with backoff"
            );
            self.etcd_view.disturb(&foreign);
            self.retry.defer_until(Instant::now() + delay);
        }
    }

    /// `--once`: one listing, one reconcile, then check that etcd holds
    /// exactly the desired records. Changes nothing while another agent
    /// holds the host.
    pub(super) async fn reconcile_once(&mut self) -> bool {
        loop {
            match self.watcher.next().await {
                Observation::EngineDown(error) => {
                    error!(dependency = "docker", error = %error, "reconcile failed");
                    return false;
                }
                observation @ Observation::Listed { .. } => {
                    self.observe_engine(vec![observation]).await;
                    break;
                }
                _ => {}
            }
        }
        // A dry run changes nothing, so it may check beside a daemon agent.
        let holder = if self.config.dry_run {
            Ok(None)
        } else {
            self.store.lock_holder().await
        };
        match holder {
            // The daemon stopped, leaving its key for its next run: nobody
            // writes beside us.
            Ok(Some(holder)) if self.store.holder_run(&holder) == HolderRun::Gone => {
                info!(
                    holder_pid = holder.pid,
                    holder_lease = holder.lease,
                    "the agent that held this host has exited; reconciling"
                );
            }
            Ok(Some(holder)) => {
                error!(
                    holder_hostname = holder.hostname,
                    holder_pid = holder.pid,
                    holder_lease = holder.lease,
                    "another agent holds this host; --once changes nothing"
                );
                return false;
            }
            Ok(None) => {}
            Err(error) => {
                error!(dependency = "etcd", error = %error, "reconcile failed");
                return false;
            }
        }
        if let Err(error) = self.sync_etcd().await {
            error!(dependency = "etcd", error = %error, "reconcile failed");
            return false;
        }
        match self.store.observe().await {
            Ok(snapshot) => {
                let desired = self.wanted.by_key(&self.config.host, &snapshot.records);
                let remaining = plan::plan(&desired, &snapshot.records, None);
                for operation in &remaining {
                    warn!(key = operation.key(), "not exact");
                }
                remaining.is_empty()
            }
            Err(error) => {
                warn!(error = %error, "cannot verify the reconcile");
                false
            }
        }
    }

    pub(super) async fn apply(&mut self, operations: &[Operation]) -> Result<(), StoreError> {
        if operations.is_empty() {
            return Ok(());
        }
        let lease = self.records_lease();
        if self.config.dry_run {
            for operation in operations {
                log_operation(&self.config.host, operation, true);
            }
            // As if applied, so that each change is reported once.
            self.etcd_view.applied(operations, lease);
            return Ok(());
        }
        let applied = self
            .store
            .apply(operations, lease, self.tenure.fence())
            .await?;
        self.record(applied.done, applied.revisions, lease);
        for (operation, reason) in &applied.rejected {
            self.metrics.etcd_error();
            let key = operation.key();
            error!(
                container_id = self.config.host.parse(key).map(|k| k.container),
                key,
                bytes = operation.payload_bytes(),
                error = %reason,
                "etcd refused this record as too large; the container stays unregistered until it changes"
            );
        }
        // A record refused as too large must not leave its older value
        // behind: that would register the container with stale ports.
        let stale: Vec<Operation> = applied
            .rejected
            .iter()
            .map(|(operation, _)| operation.key())
            .filter(|key| {
                let records = self.etcd_view.records();
                records.is_some_and(|records| records.contains_key(*key))
            })
            .map(|key| Operation::Delete {
                key: key.to_owned(),
            })
            .collect();
        if !stale.is_empty() {
            let removed = self.store.apply(&stale, lease, self.tenure.fence()).await?;
            self.record(removed.done, removed.revisions, lease);
        }
        Ok(())
    }

    /// What etcd confirmed: our picture of it, our revisions, a log line and
    /// a count per operation.
    fn record(&mut self, done: Vec<Operation>, revisions: Vec<i64>, lease: LeaseId) {
        self.etcd_view.applied(&done, lease);
        if let Some(watch) = &mut self.watch {
            watch.expect(revisions);
        }
        for operation in &done {
            log_operation(&self.config.host, operation, false);
            self.metrics.etcd_operation(match operation {
                Operation::Put { .. } => "put",
                Operation::Delete { .. } => "delete",
            });
        }
        if self.etcd_view.is_known() {
            self.metrics.set_records(self.etcd_view.len());
        }
    }

    /// Any etcd failure: our picture of etcd can no longer be trusted.
    pub(super) fn etcd_failed(&mut self, error: StoreError) {
        self.metrics.etcd_error();
        match error {
            StoreError::LeaseNotFound => self.lease_lost("etcd does not know the lease"),
            StoreError::LockLost => self.lock_lost(),
            error => self.etcd_health.failed(&error),
        }
        self.etcd_view = EtcdView::Stale;
    }
}

/// One info line per write or delete (docs/behaviour.md: "How it behaves"); `dry_run`
/// says it did not happen.
fn log_operation(host: &HostPrefix, operation: &Operation, dry_run: bool) {
    let key = operation.key();
    let record = host.parse(key);
    let container_id = record.map(|k| k.container);
    // The key's middle segment: the image, or the service a label names.
    let image = record.map(|k| k.service);
    match (operation, dry_run) {
        (Operation::Put { .. }, false) => info!(container_id, image, key, "registered"),
        (Operation::Delete { .. }, false) => info!(container_id, image, key, "unregistered"),
        (Operation::Put { .. }, true) => {
            info!(container_id, image, key, "would register (dry run)")
        }
        (Operation::Delete { .. }, true) => {
            info!(container_id, image, key, "would unregister (dry run)")
        }
    }
}
