//! The benchmark's private etcd (`rig::Etcd`) seen from outside: its
//! process's CPU time (`/proc`) and the counters of its own `/metrics`.

use anyhow::{bail, Context as _, Result};
use rig::Etcd;

use crate::procfs;

/// Room for a million records and their history: etcd's default space
/// quota (2 GiB) is too small for them.
const QUOTA_BYTES: &str = "8589934592";

/// A running private etcd, killed and its data removed on drop.
pub struct EtcdProcess {
    /// The rig's process, with its ports and data directory.
    etcd: Etcd,
    /// Its process id, for `/proc/<pid>/stat`.
    pid: u32,
    /// Clock ticks per second of `/proc/<pid>/stat`.
    ticks: f64,
}

/// etcd's counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Range requests handled, over every result code
    /// (`grpc_server_handled_total{grpc_method="Range"}`).
    pub grpc_ranges: f64,
    /// Ranges the storage layer served, requests and transactions alike
    /// (`etcd_mvcc_range_total`).
    pub mvcc_ranges: f64,
    /// Size of the backend database file (`etcd_mvcc_db_total_size_in_bytes`).
    pub db_bytes: f64,
}

impl EtcdProcess {
    pub fn start() -> Result<EtcdProcess> {
        let etcd = Etcd::start_with_flags(&["--quota-backend-bytes", QUOTA_BYTES]);
        let pid = etcd.pid().context("etcd has no process")?;
        Ok(EtcdProcess {
            etcd,
            pid,
            ticks: procfs::clock_ticks(),
        })
    }

    pub fn endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        procfs::cpu_seconds(self.pid, self.ticks)
    }

    /// Its counters now, from `/metrics` on its client URL.
    pub fn counters(&self) -> Result<Counters> {
        let address = format!("127.0.0.1:{}", self.etcd.client_port());
        let (status, body) = rig::http_get(&address, "/metrics").map_err(anyhow::Error::msg)?;
        if status != 200 {
            bail!("etcd's /metrics answered {status}");
        }
        let mut counters = Counters::default();
        let mut found = [false; 3];
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            match name {
                "grpc_server_handled_total"
                    if labels.contains(r#"grpc_method="Range""#)
                        && labels.contains(r#"grpc_service="etcdserverpb.KV""#) =>
                {
                    counters.grpc_ranges += value;
                    found[0] = true;
                }
                "etcd_mvcc_range_total" => {
                    counters.mvcc_ranges = value;
                    found[1] = true;
                }
                "etcd_mvcc_db_total_size_in_bytes" => {
                    counters.db_bytes = value;
                    found[2] = true;
                }
                _ => {}
            }
        }
        if found.contains(&false) {
            bail!("etcd's /metrics lacks a counter of the benchmark ({found:?})");
        }
        Ok(counters)
    }
}
