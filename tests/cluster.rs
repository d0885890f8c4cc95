//! A three-member etcd cluster on loopback, the agent given all three
//! endpoints: each member in turn (the first in the agent's list first) is
//! killed while containers keep starting and stopping, and the records stay
//! exact; then a rolling restart of all members, one at a time and each
//! healthy before the next, while a background thread churns containers, ends
//! exact as well, every record on one live lease.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Generous: a killed leader costs an election on top of the agent's backoff.
const CONVERGE: Duration = Duration::from_secs(30);

struct Scene {
    host_ip: String,
    containers: Containers,
    cluster: EtcdCluster,
}

impl Scene {
    fn records(&self) -> BTreeMap<String, Record> {
        get_prefix(
            &self.cluster.live_endpoint(),
            &format!("/registered/{}/", self.host_ip),
        )
    }

    fn expected(&self) -> BTreeMap<String, String> {
        expected_records(&self.host_ip, self.containers.label())
    }

    /// Waits until the records equal what Docker says now.
    fn wait_exact(&self, what: &str) {
        let expected = self.expected();
        let started = Instant::now();
        let mut last = BTreeMap::new();
        let ok = wait_until(CONVERGE, || {
            // A read may fail while the cluster elects a leader.
            let endpoint = self.cluster.live_endpoint();
            let prefix = format!("/registered/{}/", self.host_ip);
            match try_get_prefix(&endpoint, &prefix) {
                Ok(records) => {
                    last = records.into_iter().map(|(k, r)| (k, r.value)).collect();
                    last == expected
                }
                Err(_) => false,
            }
        });
        assert!(
            ok,
            "{what}: records not exact after {CONVERGE:?}\nexpected:\n{expected:#?}\nlast seen:\n{last:#?}"
        );
        eprintln!("{what}: exact after {:?}", started.elapsed());
        let leases: BTreeSet<i64> = self.records().values().map(|r| r.lease).collect();
        assert!(
            leases.len() <= 1 && !leases.contains(&0),
            "{what}: all records ride one lease: {leases:?}"
        );
        if let Some(lease) = leases.first() {
            let ttl = lease_ttl(&self.cluster.live_endpoint(), *lease);
            assert!(ttl > 0, "{what}: lease {lease:x} is not alive ({ttl})");
        }
    }
}

/// One step of churn: start a container, and remove or stop an older one.
fn churn_step(containers: &Containers, live: &Mutex<Vec<String>>, step: usize) {
    let id = containers.run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let mut live = live.lock().unwrap();
    live.push(id);
    if live.len() > 4 {
        let old = live.remove(0);
        drop(live);
        if step.is_multiple_of(2) {
            containers.rm_f(&old);
        } else {
            containers.stop(&old);
        }
    }
}

/// Sets the flag when dropped, so that a panic ends the churn thread too.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn cluster_member_loss_and_rolling_restart() {
    let id = unique_id("cluster");
    let mut scene = Scene {
        host_ip: host_ip_for(&id),
        containers: Containers::new(&id),
        cluster: EtcdCluster::start(),
    };
    let args = [
        "--host-ip".to_string(),
        scene.host_ip.clone(),
        "--etcd-endpoints".to_string(),
        scene.cluster.endpoints_arg(),
        "--require-label".to_string(),
        scene.containers.label().to_string(),
    ];
    let mut agent = Agent::spawn(&args.each_ref().map(String::as_str), &[]);
    agent.wait_ready();

    let live = Mutex::new(Vec::new());
    let mut step = 0;
    for _ in 0..3 {
        churn_step(&scene.containers, &live, step);
        step += 1;
    }
    scene.wait_exact("initial");

    // Kill each member in turn, starting with the first in the agent's list
    // (the one it most likely talks to), churning while it is down.
    for member in 0..scene.cluster.len() {
        scene.cluster.stop(member);
        for _ in 0..3 {
            churn_step(&scene.containers, &live, step);
            step += 1;
        }
        scene.wait_exact(&format!("member {member} down"));
        agent.assert_running();
        scene.cluster.restart(member);
        churn_step(&scene.containers, &live, step);
        step += 1;
        scene.wait_exact(&format!("member {member} back"));
    }

    // Rolling restart, one member at a time, each healthy before the next,
    // while another thread keeps starting and removing containers.
    let stop = AtomicBool::new(false);
    let containers = &scene.containers;
    let cluster = &mut scene.cluster;
    let churned = thread::scope(|s| {
        let churner = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                churn_step(containers, &live, n);
                n += 1;
                thread::sleep(Duration::from_millis(200));
            }
            n
        });
        let stop_churn = StopOnDrop(&stop);
        for member in 0..cluster.len() {
            cluster.stop(member);
            thread::sleep(Duration::from_secs(2));
            cluster.restart(member);
            eprintln!("rolling restart: member {member} healthy again");
            thread::sleep(Duration::from_secs(1));
        }
        drop(stop_churn);
        churner.join().expect("churn thread")
    });
    assert!(
        churned >= 3,
        "only {churned} churn steps during the restart"
    );
    scene.wait_exact("after the rolling restart");
    agent.assert_running();
}
