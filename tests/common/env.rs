//! `TestEnv`: what one test needs (a unique id, host IP and label, a private
//! etcd, its containers) and the waits on its records.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{
    expected_records_on, expected_value, get_prefix, host_ip_for, record_key, unique_id,
    wait_until, Agent, Containers, Engine, Etcd, Record, SpawnAgent,
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
    /// The engine its containers run on and its agent follows.
    pub engine: Engine,
}

impl TestEnv {
    /// A test on Docker.
    pub fn new(name: &str) -> TestEnv {
        TestEnv::on(Engine::Docker, name)
    }

    /// A test on `engine`; its name carries the engine's, so that the two
    /// runs of one body never share a label or host IP.
    pub fn on(engine: Engine, name: &str) -> TestEnv {
        TestEnv::with_etcd_on(engine, name, Etcd::start())
    }

    /// Like `new`, with a given etcd (say, one that is not running yet).
    pub fn with_etcd(name: &str, etcd: Etcd) -> TestEnv {
        TestEnv::with_etcd_on(Engine::Docker, name, etcd)
    }

    /// Like `on`, with a given etcd.
    pub fn with_etcd_on(engine: Engine, name: &str, etcd: Etcd) -> TestEnv {
        let id = match engine {
            Engine::Docker => unique_id(name),
            Engine::Podman => unique_id(&format!("{name}-{}", engine.name())),
        };
        let containers = Containers::on(engine, &id);
        TestEnv {
            host_ip: host_ip_for(&id),
            containers,
            etcd,
            id,
            engine,
        }
    }

    /// The records this test's agent must hold now, computed from the
    /// engine (see [`expected_records_on`]).
    pub fn expected_now(&self) -> BTreeMap<String, String> {
        expected_records_on(self.engine, &self.host_ip, self.label())
    }

    /// The test image as `run` is given it on this test's engine.
    pub fn image(&self) -> &'static str {
        self.engine.image()
    }

    /// The `{image}` segment and `image` field of the records of containers
    /// started from [`TestEnv::image`].
    pub fn record_image(&self) -> &'static str {
        self.engine.record_image()
    }

    /// The host port the engine published for `port` (`80/tcp`) on `host_ip`.
    pub fn host_port(&self, id: &str, port: &str, host_ip: &str) -> String {
        self.engine.host_port(id, port, host_ip)
    }

    /// The engine's CLI with `args`, its stdout; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        self.engine.cli_out(args)
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

    /// A container of this test publishing port 80 on loopback.
    pub fn run_loopback_80(&self) -> String {
        self.containers
            .run(&["-p", "127.0.0.1::80", self.image(), "sleep", "1000"])
    }

    /// The one record a container of [`TestEnv::run_loopback_80`] must have
    /// now, from its `inspect`.
    pub fn loopback_80_record(&self, id: &str) -> (String, String) {
        let public = self.host_port(id, "80/tcp", "127.0.0.1");
        let image = self.record_image();
        (
            self.key(image, id),
            expected_value(id, image, &[("127.0.0.1", &public, "80", "tcp")]),
        )
    }

    /// Host IP, endpoint and required test label as flags.
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
        let mut agent = self.spawn_agent(&args);
        agent.wait_ready();
        agent
    }

    /// Spawns an agent following Podman's API at `docker_host` (rootful or
    /// rootless), with `agent_args` plus `extra`; waits until it is ready and
    /// has said that it speaks to Podman.
    pub fn start_podman_agent(&self, docker_host: &str, extra: &[&str]) -> Agent {
        let owned = self.agent_args();
        let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
        args.extend(["--docker-host", docker_host]);
        args.extend_from_slice(extra);
        let mut agent = Agent::spawn(&args, &[]);
        agent.wait_ready();
        assert!(
            agent.wait_for_log("engine=podman", Duration::from_secs(1)),
            "the agent did not log that it speaks to Podman:\n{}",
            agent.lines().join("\n")
        );
        agent
    }

    /// Spawns an agent with exactly `args`, following this test's engine:
    /// `DOCKER_HOST` names Podman's socket (a `--docker-host` in `args` still
    /// wins); on Docker the agent's own default is left to work.
    pub fn spawn_agent(&self, args: &[&str]) -> Agent {
        match self.engine {
            Engine::Docker => Agent::spawn(args, &[]),
            Engine::Podman => Agent::spawn(args, &[("DOCKER_HOST", &self.engine.docker_host())]),
        }
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
