//! docker-etcd-register keeps etcd v3 equal to the published ports of the
//! containers running on one Docker host. The binary (`src/main.rs`) only
//! parses the command line, sets up logging and signals and maps outcomes to
//! exit codes; everything else is this library.
//!
//! Layout (ARCHITECTURE.md has the whole map and the invariants):
//!
//! - The pure core, no I/O, deterministic: [`image`] (the `{image}` key
//!   segment), [`container`] (a container's facts and the selection rules),
//!   [`record`] (the key layout and the record value), [`plan`] (desired +
//!   observed → operations), [`listing`] (`list`'s rows).
//! - The seams the agent depends on: [`engine`] and [`store`]. The adapters,
//!   the only code that speaks to the outside: [`docker`] (bollard) and
//!   [`etcd`] (etcd_client).
//! - The agent: [`watcher`] follows the engine, [`agent`] is the one loop
//!   that owns all state, [`supervise`] its retry and health bookkeeping,
//!   [`metrics`] the Prometheus endpoint.
//! - The consumers: [`list`], [`render`] (load balancers' configuration),
//!   both following the records with the [`informer`].
//! - [`config`]: flags and environment variables, validated.

pub mod agent;
pub mod config;
pub mod container;
pub mod docker;
pub mod engine;
pub mod etcd;
pub mod image;
pub mod informer;
pub mod list;
pub mod listing;
pub mod metrics;
pub mod plan;
pub mod record;
pub mod render;
#[cfg(test)]
mod sim;
pub mod store;
pub mod supervise;
pub mod watcher;
