//! `TestEnv`: what one test needs (a unique id, host IP and label, a private
//! etcd, its containers) and the waits on its records.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{
    expected_records, expected_value, get_prefix, host_ip_for, host_port, record_key, unique_id,
    wait_until, Agent, Containers, Etcd, Record, SpawnAgent, IMAGE,
};

/// Everything one test needs: a unique id, host IP and label, a private etcd
/// and a guard over its containers.
pub struct TestEnv {
    /// Unique to this test: its label value and the seed of its host IP.
    pub id: String,
    /// The agent's `--host-ip`: a loopback address of this test alone, so
    /// that its records have a prefix no other test writes.
    pub host_ip: String,
    /// The test's containers, removed when the test ends.
    pub containers: Containers,
    /// The test's own etcd.
    pub etcd: Etcd,
}

impl TestEnv {
    pub fn new(name: &str) -> TestEnv {
        let id = unique_id(name);
        let containers = Containers::new(&id);
        TestEnv {
            host_ip: host_ip_for(&id),
            containers,
            etcd: Etcd::start(),
            id,
        }
    }

    /// Like `new`, with a given etcd (say, one that is not running yet).
    pub fn with_etcd(name: &str, etcd: Etcd) -> TestEnv {
        let id = unique_id(name);
        let containers = Containers::new(&id);
        TestEnv {
            host_ip: host_ip_for(&id),
            containers,
            etcd,
            id,
        }
    }

    /// The records this test's agent must hold now, computed from Docker
    /// (see [`expected_records`]).
    pub fn expected_now(&self) -> BTreeMap<String, String> {
        expected_records(&self.host_ip, self.label())
    }

    pub fn endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    pub fn label(&self) -> &str {
        self.containers.label()
    }

    /// `/registered/<host ip>/`
    pub fn host_prefix(&self) -> String {
        format!("/registered/{}/", self.host_ip)
    }

    /// `/registered/<host ip>/<image>/<id>`
    pub fn key(&self, image: &str, id: &str) -> String {
        record_key(&self.host_ip, image, id)
    }

    /// Host IP, endpoint and required test label as flags.
    /// A container of this test publishing port 80 on loopback.
    pub fn run_loopback_80(&self) -> String {
        self.containers
            .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"])
    }

    /// The one record a container of [`TestEnv::run_loopback_80`] must have
    /// now, from its `docker inspect`.
    pub fn loopback_80_record(&self, id: &str) -> (String, String) {
        let public = host_port(id, "80/tcp", "127.0.0.1");
        (
            self.key(IMAGE, id),
            expected_value(id, IMAGE, &[("127.0.0.1", &public, "80", "tcp")]),
        )
    }

    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--host-ip".into(),
            self.host_ip.clone(),
            "--etcd-endpoints".into(),
            self.endpoint(),
            "--require-label".into(),
            self.label().to_string(),
        ]
    }

    /// Spawns an agent with `agent_args` plus `extra` and waits until ready.
    pub fn start_agent(&self, extra: &[&str]) -> Agent {
        let owned = self.agent_args();
        let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let mut agent = Agent::spawn(&args, &[]);
        agent.wait_ready();
        agent
    }

    /// The records under this test's host prefix.
    pub fn records(&self) -> BTreeMap<String, Record> {
        get_prefix(&self.endpoint(), &self.host_prefix())
    }

    pub fn keys(&self) -> BTreeSet<String> {
        self.records().into_keys().collect()
    }

    /// Waits until the host prefix holds exactly `expected` (key -> value).
    pub fn wait_records(&self, timeout: Duration, expected: &BTreeMap<String, String>) {
        let mut last = BTreeMap::new();
        let ok = wait_until(timeout, || {
            last = self
                .records()
                .into_iter()
                .map(|(k, r)| (k, r.value))
                .collect();
            &last == expected
        });
        assert!(
            ok,
            "etcd under {} did not become\n{expected:#?}\nlast seen:\n{last:#?}",
            self.host_prefix()
        );
    }

    /// Waits until `key` exists and returns its record.
    pub fn wait_key(&self, timeout: Duration, key: &str) -> Record {
        let mut found = None;
        let ok = wait_until(timeout, || {
            found = self.records().remove(key);
            found.is_some()
        });
        assert!(
            ok,
            "key {key} did not appear; records:\n{:#?}",
            self.records()
        );
        found.unwrap()
    }

    /// Waits until `key` is gone.
    pub fn wait_gone(&self, timeout: Duration, key: &str) {
        let ok = wait_until(timeout, || !self.records().contains_key(key));
        assert!(
            ok,
            "key {key} was not deleted; records:\n{:#?}",
            self.records()
        );
    }
}
