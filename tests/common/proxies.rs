//! Envoy and Traefik for `tests/proxies.rs`: load balancers that take a new
//! configuration without a reload, each fed by one `render` process with the
//! shipped examples (Envoy's clusters and listeners in two files,
//! Traefik's one dynamic file), listening on the test's own loopback
//! ports, in a process group of its own (killed on drop), their log in the
//! test's temporary directory for the assertion messages.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rig::proxies::{envoy_bootstrap, traefik_static};

use super::lb::{example, read, spawn_render_files, Group};
use super::{http_get, test_port, wait_until, Agent, TestEnv};

/// How long a load balancer may take to answer on its admin port.
const START: Duration = Duration::from_secs(20);
/// How much of a load balancer's log an assertion message shows.
const LOG_TAIL_CHARS: usize = 6000;

/// Which load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Envoy,
    Traefik,
}

impl Kind {
    pub fn program(self) -> &'static str {
        match self {
            Kind::Envoy => "envoy",
            Kind::Traefik => "traefik",
        }
    }

    /// Panics, naming the script that installs it, unless the binary runs:
    /// a machine without it must fail these tests, never skip them.
    pub fn require(self) {
        let (program, version) = match self {
            Kind::Envoy => ("envoy", "--version"),
            Kind::Traefik => ("traefik", "version"),
        };
        assert!(
            rig::process::runs(program, version),
            "`{program} {version}` does not run: install it with `bash scripts/setup-proxies.sh` \
             as root (scripts/setup.sh runs it)"
        );
    }
}

/// A load balancer fed by `render`. Fields drop in order: the load
/// balancer, then `render`, then the directory.
pub struct Proxy {
    /// The load balancer's process group.
    process: Group,
    /// `render`, writing the files the load balancer follows.
    pub render: Agent,
    /// Which load balancer.
    pub kind: Kind,
    /// Envoy's admin port or Traefik's API port, on loopback.
    admin: u16,
    /// The rendered files, in the order `render` publishes them.
    files: Vec<PathBuf>,
    /// The load balancer's stdout and stderr.
    log: PathBuf,
    /// The files, the load balancer's own configuration and its log.
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts `render` with the shipped templates (every port of
    /// `frontends` a `--frontend-port`) and, once it has written its files,
    /// the load balancer on them, its frontends on loopback; returns when
    /// the load balancer answers on its admin port.
    pub fn start(kind: Kind, env: &TestEnv, frontends: &[u16]) -> Proxy {
        kind.require();
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = test_port();
        let log = dir.path().join(format!("{}.log", kind.program()));
        let ports: Vec<String> = frontends.iter().map(u16::to_string).collect();
        let ports = ports.join(",");
        let args = ["--frontend-port", ports.as_str()];
        let names: &[&str] = match kind {
            Kind::Envoy => &["cds", "lds"],
            Kind::Traefik => &["dynamic"],
        };
        let templates: Vec<PathBuf> = names
            .iter()
            .map(|n| example(&format!("{}/{n}.yaml.j2", kind.program())))
            .collect();
        let files: Vec<PathBuf> = names
            .iter()
            .map(|n| dir.path().join(format!("{n}.yaml")))
            .collect();
        let pairs: Vec<(&Path, &Path)> = templates
            .iter()
            .zip(&files)
            .map(|(t, o)| (t.as_path(), o.as_path()))
            .collect();
        let render = spawn_render_files(&env.endpoint(), &pairs, &args, &[]);
        assert!(
            wait_until(START, || files.iter().all(|f| f.exists())),
            "render wrote no files: {:?}",
            render.lines()
        );
        let process = match kind {
            Kind::Envoy => start_envoy(dir.path(), admin, &log),
            Kind::Traefik => start_traefik(dir.path(), &files[0], frontends, admin, &log),
        };
        let mut proxy = Proxy {
            process,
            render,
            kind,
            admin,
            files,
            log,
            _dir: dir,
        };
        let ready = match kind {
            Kind::Envoy => "/ready",
            Kind::Traefik => "/api/overview",
        };
        assert!(
            wait_until(START, || proxy.admin_get(ready).is_ok()),
            "{} never answered {ready}:\n{}",
            kind.program(),
            proxy.describe()
        );
        proxy.assert_running();
        proxy
    }

    /// The body of `GET path` on the admin port, if it answered 200.
    pub fn admin_get(&self, path: &str) -> Result<String, String> {
        match http_get(&format!("127.0.0.1:{}", self.admin), path) {
            Ok((200, body)) => Ok(body),
            Ok((status, body)) => Err(format!("status {status}: {body}")),
            Err(error) => Err(error),
        }
    }

    /// The rendered files, one after the other.
    pub fn config(&self) -> String {
        self.files.iter().map(|f| read(f)).collect()
    }

    /// How many backends the rendered files hold.
    pub fn servers(&self) -> usize {
        let entry = match self.kind {
            Kind::Envoy => "- endpoint:",
            Kind::Traefik => "- address:",
        };
        self.config()
            .lines()
            .filter(|l| l.trim_start().starts_with(entry))
            .count()
    }

    /// Whether the rendered files have a frontend on `port`.
    pub fn renders_frontend(&self, port: u16) -> bool {
        let frontend = match self.kind {
            // A listener's line (an endpoint's ends in four braces).
            Kind::Envoy => format!("port_value: {port}}}}}\n"),
            Kind::Traefik => format!("[\"tcp-{port}\"]"),
        };
        self.config().contains(&frontend)
    }

    /// Whether the load balancer runs a frontend on `port` now: Envoy a
    /// listener on it, Traefik an enabled router on its entry point.
    pub fn runs_frontend(&self, port: u16) -> bool {
        match self.kind {
            Kind::Envoy => self
                .admin_get("/listeners")
                .is_ok_and(|l| l.contains(&format!("::127.0.0.1:{port}\n"))),
            Kind::Traefik => self.admin_get("/api/tcp/routers").is_ok_and(|body| {
                let routers: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let entry_point = format!("tcp-{port}");
                routers.as_array().into_iter().flatten().any(|r| {
                    r["entryPoints"][0] == entry_point.as_str() && r["status"] == "enabled"
                })
            }),
        }
    }

    /// What the load balancer refused of the files: Envoy's non-zero
    /// `update_rejected` counters, Traefik's error lines (a router it
    /// disabled, a service it could not find).
    pub fn refusals(&self) -> Vec<String> {
        match self.kind {
            Kind::Envoy => self
                .admin_get("/stats?filter=update_rejected")
                .unwrap_or_else(|e| panic!("envoy's stats: {e}"))
                .lines()
                .filter(|l| !l.ends_with(": 0"))
                .map(str::to_owned)
                .collect(),
            // Its errors about the configuration, not those of traffic (a
            // backend that refused a connection while it went away).
            Kind::Traefik => read(&self.log)
                .lines()
                .filter(|l| l.contains(" ERR ") && !l.contains("Error while dialing backend"))
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The load balancer and `render` still run, and the load balancer
    /// refused nothing `render` wrote.
    pub fn assert_running(&mut self) {
        assert!(
            self.process.is_running(),
            "{} exited:\n{}",
            self.kind.program(),
            self.describe()
        );
        self.render.assert_running();
        let refusals = self.refusals();
        assert!(
            refusals.is_empty(),
            "{} refused a file: {refusals:#?}\n{}",
            self.kind.program(),
            self.describe()
        );
    }

    /// The rendered files and the end of the load balancer's log.
    pub fn describe(&self) -> String {
        let log = read(&self.log);
        let start = log.len().saturating_sub(LOG_TAIL_CHARS);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!(
            "--- rendered files\n{}--- {} log (its end)\n{}",
            self.config(),
            self.kind.program(),
            &log[start..]
        )
    }
}

/// Envoy on the shipped bootstrap, its directory `dir` instead of
/// /etc/envoy, its admin port `admin`.
fn start_envoy(dir: &Path, admin: u16, log: &Path) -> Group {
    let bootstrap = dir.join("bootstrap.yaml");
    std::fs::write(&bootstrap, envoy_bootstrap(dir, admin)).expect("write the bootstrap");
    let args = ["-c", &bootstrap.to_string_lossy(), "--disable-hot-restart"];
    Group::spawn_logged("envoy", &args, log).unwrap_or_else(|e| panic!("spawn envoy: {e}"))
}

/// Traefik on the shipped static configuration with the test's entry
/// points on loopback instead of the shipped ones, the dynamic file
/// `dynamic`, its API on `api` for the assertions, and a debug log.
fn start_traefik(dir: &Path, dynamic: &Path, frontends: &[u16], api: u16, log: &Path) -> Group {
    let mut entry_points: Vec<(String, String)> = frontends
        .iter()
        .map(|port| (format!("tcp-{port}"), format!("127.0.0.1:{port}")))
        .collect();
    entry_points.push(("traefik".to_owned(), format!("127.0.0.1:{api}")));
    let extra = "api:\n  insecure: true\nlog:\n  level: DEBUG\n  noColor: true\n";
    let path = dir.join("traefik.yaml");
    std::fs::write(&path, traefik_static(dynamic, &entry_points, extra))
        .expect("write traefik.yaml");
    let args = [format!("--configFile={}", path.display())];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Group::spawn_logged("traefik", &args, log).unwrap_or_else(|e| panic!("spawn traefik: {e}"))
}
