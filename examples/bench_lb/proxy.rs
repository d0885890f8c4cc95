//! The four load balancers measured side by side, each fed by a `render` of
//! its own from the shipped example templates: what each one renders, with
//! which check, reload and debounce, and on which loopback address it serves.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rig::{http_get, Agent, AgentOutput};
use tempfile::TempDir;

use rig::process::Group;

use crate::launch;
use rig::process::check_interrupted;

use crate::Logs;

/// Longest `render` may take to write its first file.
const FIRST_FILE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Haproxy,
    Nginx,
    Envoy,
    Traefik,
}

/// How a proxy takes a new file, which sets `render`'s debounce for it: a
/// reload costs a new process or workers, so changes are gathered longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// `render --reload` signals it (haproxy: new worker; nginx: new workers).
    Reload,
    /// It watches the file itself and applies it in its running process.
    InProcess,
}

impl Takes {
    pub fn describe(self) -> &'static str {
        match self {
            Takes::Reload => "reloaded",
            Takes::InProcess => "in process",
        }
    }
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Haproxy, Kind::Nginx, Kind::Envoy, Kind::Traefik];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Haproxy => "haproxy",
            Kind::Nginx => "nginx",
            Kind::Envoy => "envoy",
            Kind::Traefik => "traefik",
        }
    }

    /// `haproxy,envoy`: the proxies named, in the order of [`Kind::ALL`].
    pub fn parse_list(list: &str) -> Result<Vec<Kind>> {
        let names: Vec<&str> = list.split(',').map(str::trim).collect();
        if let Some(unknown) = names
            .iter()
            .find(|n| !Kind::ALL.iter().any(|k| k.name() == **n))
        {
            bail!("--proxies: unknown proxy {unknown:?} (haproxy, nginx, envoy, traefik)");
        }
        Ok(Kind::ALL
            .into_iter()
            .filter(|k| names.contains(&k.name()))
            .collect())
    }

    /// The loopback address its frontend binds (`LB_BIND_ADDRESS`): one per
    /// proxy, so that all of them listen on the same frontend port.
    pub fn address(self) -> &'static str {
        match self {
            Kind::Haproxy => "127.0.0.1",
            Kind::Nginx => "127.0.0.2",
            Kind::Envoy => "127.0.0.3",
            Kind::Traefik => "127.0.0.4",
        }
    }

    pub fn takes(self) -> Takes {
        match self {
            Kind::Haproxy | Kind::Nginx => Takes::Reload,
            Kind::Envoy | Kind::Traefik => Takes::InProcess,
        }
    }

    /// The example templates under examples/ and the file each is rendered
    /// to, in `render`'s order of publication (Envoy's clusters before the
    /// listeners that name them). The first one lists the backends.
    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Haproxy => &[("haproxy/haproxy.cfg.j2", "haproxy.cfg")],
            Kind::Nginx => &[("nginx/nginx.conf.j2", "nginx.conf")],
            Kind::Envoy => &[
                ("envoy/cds.yaml.j2", "cds.yaml"),
                ("envoy/lds.yaml.j2", "lds.yaml"),
            ],
            Kind::Traefik => &[("traefik/dynamic.yaml.j2", "dynamic.yaml")],
        }
    }
}

/// What every proxy's `render` shares.
pub struct Setup<'a> {
    /// The binary whose `render` subcommand is measured.
    pub agent: &'a Path,
    pub endpoint: &'a str,
    /// The backends' container port: every proxy's frontend port.
    pub port: u16,
    pub logs: &'a Logs,
    /// `HAPROXY_MODE` of the haproxy example.
    pub haproxy_mode: &'a str,
}

/// One running proxy and the `render` that writes its configuration. The
/// fields drop in order: `render` stops writing, the proxy's process group
/// is killed, then its directory is removed.
pub struct Proxy {
    pub kind: Kind,
    pub debounce_ms: u64,
    /// `address:port` of its frontend.
    frontend: String,
    /// The rendered file that lists the backends (Envoy's clusters).
    backends_file: PathBuf,
    _render: Agent,
    _process: Group,
    _dir: TempDir,
}

impl Proxy {
    /// Starts `render` for `kind`, waits for its first file (which holds the
    /// backend on `anchor_port`: a proxy with no backend file would not
    /// start), then starts the proxy on it.
    pub fn start(kind: Kind, setup: &Setup, debounce_ms: u64, anchor_port: u16) -> Result<Proxy> {
        let dir = tempfile::tempdir().context("temporary directory")?;
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut args: Vec<String> = ["render", "--etcd-endpoints", setup.endpoint]
            .map(String::from)
            .to_vec();
        for (template, out) in kind.files() {
            args.extend([
                "--template".to_string(),
                examples.join(template).to_string_lossy().into_owned(),
                "--out".to_string(),
                dir.path().join(out).to_string_lossy().into_owned(),
            ]);
        }
        args.extend([
            "--debounce".to_string(),
            debounce_ms.to_string(),
            "--frontend-port".to_string(),
            setup.port.to_string(),
        ]);
        if let Some((check, reload)) = launch::check_and_reload(kind, dir.path()) {
            args.extend(["--check".to_string(), check]);
            args.extend(["--reload".to_string(), reload]);
        }
        let mut envs = vec![("LB_BIND_ADDRESS", kind.address())];
        if kind == Kind::Haproxy {
            envs.push(("HAPROXY_MODE", setup.haproxy_mode));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = setup.logs.path(&format!("render-{}", kind.name()));
        let render = Agent::spawn_binary(setup.agent, &args, &envs, AgentOutput::LogFile(log))
            .with_context(|| format!("spawn {} render", setup.agent.display()))?;

        let backends_file = dir.path().join(kind.files()[0].1);
        let last_file = dir.path().join(kind.files()[kind.files().len() - 1].1);
        let deadline = Instant::now() + FIRST_FILE_TIMEOUT;
        while !(holds_port(&backends_file, anchor_port) && last_file.exists()) {
            check_interrupted()?;
            if Instant::now() > deadline {
                bail!(
                    "{}: render wrote no file holding the first backend within \
                     {FIRST_FILE_TIMEOUT:?} (see {})",
                    kind.name(),
                    setup
                        .logs
                        .path(&format!("render-{}", kind.name()))
                        .display()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        let process = launch::spawn(kind, dir.path(), setup)?;
        Ok(Proxy {
            kind,
            debounce_ms,
            frontend: format!("{}:{}", kind.address(), setup.port),
            backends_file,
            _render: render,
            _process: process,
            _dir: dir,
        })
    }

    /// `address:port` of its frontend.
    pub fn frontend(&self) -> &str {
        &self.frontend
    }

    /// Whether its rendered file lists the backend on host port `port`.
    pub fn file_holds(&self, port: u16) -> bool {
        holds_port(&self.backends_file, port)
    }

    /// The hostname of the backend that answered `GET /` through it.
    pub fn answer(&self) -> Result<String, String> {
        answer(&self.frontend)
    }
}

/// The hostname of the backend that answered `GET /` at `frontend`; why
/// none did (no answer, or a status other than 200).
pub fn answer(frontend: &str) -> Result<String, String> {
    match http_get(frontend, "/") {
        Ok((200, body)) => Ok(body.trim().to_string()),
        Ok((status, body)) => Err(format!("status {status}: {}", body.trim())),
        Err(error) => Err(error),
    }
}

/// Whether the file at `path` has `port` as a whole number: every example
/// writes a backend's host port as digits of their own (`127.0.0.1:20123`,
/// `port_value: 20123`), and the backends' host ports are never the
/// frontend port nor each other.
fn holds_port(path: &Path, port: u16) -> bool {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let wanted = port.to_string();
    text.split(|c: char| !c.is_ascii_digit())
        .any(|number| number == wanted)
}
