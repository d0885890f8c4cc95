//! The simulator (compiled for tests only): the real agent loop
//! (`agent::run_with`) on an in-memory engine ([`engine::SimEngine`]) and an
//! in-memory etcd ([`cluster::Cluster`], one [`store::SimStore`] handle per
//! agent process), driven by schedules of workload and faults
//! ([`schedule`]) under tokio's paused clock ([`run`]), and checked
//! against the agent's promises ([`properties`]). Deterministic: a schedule
//! (or a seed) replays exactly.

pub(crate) mod cluster;
mod conflicts;
mod engine;
mod informer;
mod properties;
pub(crate) mod records;
mod regressions;
mod restarts;
mod run;
mod schedule;
mod store;
mod tests;
