//! The proxies' processes: the command line of each, the `--check` and
//! `--reload` its `render` runs, and the static configuration of Envoy and
//! Traefik, taken from the shipped example with only the benchmark's own
//! directory, address and ports put in (the rest, e.g. Traefik's throttle,
//! is measured as shipped).

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::proxy::{Kind, Setup};

/// The proxy's binary, found on PATH.
fn program(kind: Kind) -> &'static str {
    kind.name()
}

/// Fails unless the proxy's binary runs (`scripts/setup.sh` installs all
/// four), before anything is started.
pub fn require(kind: Kind) -> Result<()> {
    let version = match kind {
        Kind::Haproxy => "-v",
        Kind::Nginx => "-v",
        Kind::Envoy => "--version",
        Kind::Traefik => "version",
    };
    let ran = Command::new(program(kind))
        .arg(version)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match ran {
        Ok(status) if status.success() => Ok(()),
        _ => bail!(
            "{} does not run (`bash scripts/setup.sh` installs it; --proxies leaves it out)",
            program(kind)
        ),
    }
}

/// `render --check` and `--reload` of the proxies that reload: haproxy's
/// master takes SIGUSR2 (a new worker takes the listening sockets over), and
/// nginx's SIGHUP (new workers, the old ones finish their connections).
/// Before the proxy is started there is no pidfile and nothing to reload.
pub fn check_and_reload(kind: Kind, dir: &Path) -> Option<(String, String)> {
    let pidfile = dir.join(format!("{}.pid", kind.name()));
    let signal = |name: &str| {
        format!(
            "test ! -e {0} || kill -{name} $(cat {0})",
            pidfile.display()
        )
    };
    match kind {
        Kind::Haproxy => Some(("haproxy -c -q -f {}".to_string(), signal("USR2"))),
        Kind::Nginx => Some((
            format!("nginx -t -q -c {{}} -g '{}'", nginx_globals(dir)),
            signal("HUP"),
        )),
        Kind::Envoy | Kind::Traefik => None,
    }
}

/// nginx's directives that would otherwise name system paths.
fn nginx_globals(dir: &Path) -> String {
    format!("pid {}; error_log stderr;", dir.join("nginx.pid").display())
}

/// Starts the proxy on the files `render` wrote into `dir`.
pub fn spawn(kind: Kind, dir: &Path, setup: &Setup) -> Result<Group> {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let args: Vec<String> = match kind {
        Kind::Haproxy => vec![
            "-W".into(),
            "-db".into(),
            "-S".into(),
            path("master.sock"),
            "-p".into(),
            path("haproxy.pid"),
            "-f".into(),
            path("haproxy.cfg"),
        ],
        Kind::Nginx => vec![
            "-c".into(),
            path("nginx.conf"),
            "-g".into(),
            format!("daemon off; {}", nginx_globals(dir)),
        ],
        Kind::Envoy => {
            write(dir, "bootstrap.yaml", &envoy_bootstrap(dir)?)?;
            vec![
                "-c".into(),
                path("bootstrap.yaml"),
                "--disable-hot-restart".into(),
                "--log-level".into(),
                "warn".into(),
            ]
        }
        Kind::Traefik => {
            write(dir, "traefik.yaml", &traefik_static(dir, setup.port)?)?;
            vec![format!("--configFile={}", path("traefik.yaml"))]
        }
    };
    Group::spawn(program(kind), &args, &setup.logs.path(kind.name()))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
}

fn shipped(relative: &str) -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(relative);
    std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

/// `text` with `from` replaced by `to`; an error unless `from` occurs, so
/// that a change of the shipped file is noticed instead of benchmarked
/// wrongly.
fn replaced(text: &str, from: &str, to: &str, file: &str) -> Result<String> {
    if !text.contains(from) {
        bail!("examples/{file} no longer has {from:?}: update examples/bench_lb/launch.rs");
    }
    Ok(text.replace(from, to))
}

/// The shipped bootstrap with the benchmark's directory for /etc/envoy and
/// its admin listener on one of the benchmark's ports.
fn envoy_bootstrap(dir: &Path) -> Result<String> {
    let file = "envoy/bootstrap.yaml";
    let text = replaced(&shipped(file)?, "/etc/envoy", &dir.to_string_lossy(), file)?;
    let admin = format!("port_value: {}", rig::test_port());
    replaced(&text, "port_value: 9901", &admin, file)
}

/// The shipped static configuration with the benchmark's dynamic file and,
/// for its entry points, the one of the frontend port on Traefik's address.
fn traefik_static(dir: &Path, port: u16) -> Result<String> {
    let file = "traefik/traefik.yaml";
    let dynamic = dir.join("dynamic.yaml");
    let text = replaced(
        &shipped(file)?,
        "/etc/traefik/dynamic.yaml",
        &dynamic.to_string_lossy(),
        file,
    )?;
    let entry_points = format!(
        "entryPoints:\n  tcp-{port}:\n    address: \"{}:{port}\"\n",
        Kind::Traefik.address()
    );
    let mut out = String::new();
    let mut in_entry_points = false;
    let mut found = false;
    for line in text.lines() {
        let top_level = !line.is_empty() && !line.starts_with([' ', '#']);
        if top_level {
            in_entry_points = line.trim_end() == "entryPoints:";
            if in_entry_points {
                out.push_str(&entry_points);
                found = true;
            }
        }
        if !in_entry_points {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        bail!("examples/{file} no longer has a top-level entryPoints: update examples/bench_lb/launch.rs");
    }
    Ok(out)
}

/// A process in a process group of its own, its output in a log file, the
/// whole group killed on drop (haproxy's master and workers, nginx's master
/// and workers).
pub struct Group {
    child: Child,
}

impl Group {
    fn spawn(program: &str, args: &[String], log: &Path) -> Result<Group> {
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {program}"))?;
        Ok(Group { child })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}
