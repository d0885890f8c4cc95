//! The records of the benchmark: a deterministic cluster of hosts and
//! containers, each record built by the agent's own code from container
//! facts (`record::desired_record`), and the fill of an etcd with them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use docker_etcd_register::container::{Container, PortBinding};
use docker_etcd_register::record::{desired_record, HostPrefix, Record};
use etcd_client::{GetOptions, Txn, TxnOp};

use rig::process::check_interrupted;

/// The root of every key, as the agent's `--prefix` default gives it.
pub const ROOT: &str = "/registered";
/// The services the containers belong to; each claims container ports of
/// its own, so that no two services contest a load balancer's port.
const SERVICES: usize = 100;
/// etcd's default `--max-txn-ops`.
const TXN_OPS: usize = 128;
/// Transactions in flight while filling.
const IN_FLIGHT: usize = 8;
/// A container's public ports are `PUBLIC_BASE + 3 * slot + binding` on its host.
const PUBLIC_BASE: usize = 30_000;

/// How the records spread over the cluster: record `i` is container slot
/// `i / hosts` of host `i % hosts`.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Records filled before anything is measured.
    pub records: usize,
    /// Hosts they are spread over (fewer when there are fewer records).
    pub hosts: usize,
}

/// A record added while the render daemon runs, and how to find it in the
/// rendered file.
pub struct Extra {
    pub record: Record,
    /// ` ip:public_port `: its first binding's backend address in the
    /// haproxy example, between the server name and `check`.
    pub needle: String,
}

impl Layout {
    pub fn new(records: usize, hosts: usize) -> Layout {
        Layout {
            records,
            hosts: hosts.min(records).max(1),
        }
    }

    /// The most container slots a host has.
    pub fn slots(&self) -> usize {
        self.records.div_ceil(self.hosts)
    }

    /// Whether `extras` added containers still get public ports.
    pub fn check_ports(&self, extras: usize) -> Result<()> {
        if PUBLIC_BASE + 3 * (self.slots() + extras) > usize::from(u16::MAX) {
            bail!(
                "{} records on {} hosts leave no public ports for the added containers",
                self.records,
                self.hosts
            );
        }
        Ok(())
    }

    /// Record `index` of the fill.
    pub fn record(&self, index: usize) -> Record {
        container_record(index % self.hosts, index / self.hosts)
    }

    /// The `k`-th container added after the fill: a new slot on some host.
    pub fn extra(&self, k: usize) -> Extra {
        let host = (k * 7919) % self.hosts;
        let slot = self.slots() + k;
        Extra {
            record: container_record(host, slot),
            needle: format!(" {}:{} ", host_ip(host), PUBLIC_BASE + 3 * slot),
        }
    }
}

/// Host `h`'s `--host-ip`: `10.x.y.z`, 250 hosts per `/24`.
fn host_ip(host: usize) -> IpAddr {
    let (subnet, last) = (host / 250, host % 250 + 1);
    let octet = |n: usize| u8::try_from(n % 256).unwrap_or_default();
    IpAddr::V4(Ipv4Addr::new(
        10,
        octet(subnet / 256),
        octet(subnet),
        octet(last),
    ))
}

/// The record the agent on `host` writes for its container in `slot`.
fn container_record(host: usize, slot: usize) -> Record {
    let seed = ((host as u64) << 32) | slot as u64;
    let id: String = (0..4).map(|i| format!("{:016x}", mix(seed, i))).collect();
    let service = (mix(seed, 4) % SERVICES as u64) as usize;
    // 1, 2 or 3 published ports by service: a web port, a second TCP
    // port, a UDP one.
    let bindings = (0..1 + service % 3)
        .map(|binding| PortBinding {
            private_port: (20_000 + 10 * service + binding).to_string(),
            protocol: if binding == 2 { "udp" } else { "tcp" }.into(),
            host_ip: "0.0.0.0".into(),
            host_port: (PUBLIC_BASE + 3 * slot + binding).to_string(),
        })
        .collect();
    let container = Container {
        configured_image: format!(
            "registry.example.com/team/svc-{service:02}:1.{}",
            service % 7
        ),
        image_id: format!("sha256:{:016x}{:048x}", mix(service as u64, 5), 0),
        id,
        running: true,
        bindings,
        ..Container::default()
    };
    desired_record(&container, &HostPrefix::new(ROOT, host_ip(host)))
        .expect("a benchmark container publishes ports")
}

/// SplitMix64 of `seed` and `round`: deterministic, well spread.
fn mix(seed: u64, round: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(5)
        .wrapping_add(round)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Puts every record of `layout` in transactions of [`TXN_OPS`] puts,
/// [`IN_FLIGHT`] at a time, then checks the count.
pub async fn fill(endpoint: &str, layout: Layout) -> Result<()> {
    let client = rig::etcd::connect(endpoint).await?;
    let batches = layout.records.div_ceil(TXN_OPS);
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..IN_FLIGHT {
        let mut client = client.clone();
        let done = Arc::clone(&done);
        workers.spawn(async move {
            for batch in (worker..batches).step_by(IN_FLIGHT) {
                check_interrupted()?;
                let end = ((batch + 1) * TXN_OPS).min(layout.records);
                let puts: Vec<TxnOp> = (batch * TXN_OPS..end)
                    .map(|i| {
                        let Record { key, value } = layout.record(i);
                        TxnOp::put(key, value, None)
                    })
                    .collect();
                client.txn(Txn::new().and_then(puts)).await?;
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                // About every tenth of the fill.
                if finished * 10 / batches != (finished - 1) * 10 / batches {
                    crate::progress(&format!(
                        "  filled {} of {} records ({:.0} s)",
                        (finished * TXN_OPS).min(layout.records),
                        layout.records,
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("fill worker")??;
    }
    let count = client
        .clone()
        .get(
            format!("{ROOT}/"),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?
        .count();
    if usize::try_from(count)? != layout.records {
        bail!("etcd holds {count} records, not {}", layout.records);
    }
    Ok(())
}
