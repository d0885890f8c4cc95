//! The proxies' processes: the command line of each, the `--check` and
//! `--reload` its `render` runs, and the static configuration of Envoy and
//! Traefik, taken from the shipped example with only the benchmark's own
//! directory, address and ports put in (the rest, e.g. Traefik's throttle,
//! is measured as shipped).

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use rig::process::Group;

use crate::proxy::{Kind, Setup};

/// The proxy's binary, found on PATH.
fn program(kind: Kind) -> &'static str {
    kind.name()
}

/// Fails unless the proxy's binary runs (`scripts/setup.sh` installs all
/// four), before anything is started.
pub fn require(kind: Kind) -> Result<()> {
    let version = match kind {
        Kind::Haproxy | Kind::Nginx => "-v",
        Kind::Envoy => "--version",
        Kind::Traefik => "version",
    };
    if !rig::process::runs(program(kind), version) {
        bail!(
            "{} does not run (`bash scripts/setup.sh` installs it; --proxies leaves it out)",
            program(kind)
        );
    }
    Ok(())
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
            let bootstrap = rig::proxies::envoy_bootstrap(dir, rig::test_port());
            write(dir, "bootstrap.yaml", &bootstrap)?;
            vec![
                "-c".into(),
                path("bootstrap.yaml"),
                "--disable-hot-restart".into(),
                "--log-level".into(),
                "warn".into(),
            ]
        }
        Kind::Traefik => {
            let entry_points = [(
                format!("tcp-{}", setup.port),
                format!("{}:{}", Kind::Traefik.address(), setup.port),
            )];
            let dynamic = dir.join("dynamic.yaml");
            let text = rig::proxies::traefik_static(&dynamic, &entry_points, "");
            write(dir, "traefik.yaml", &text)?;
            vec![format!("--configFile={}", path("traefik.yaml"))]
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = setup.logs.path(kind.name());
    Group::spawn_logged(program(kind), &args, &log)
        .with_context(|| format!("spawn {}", program(kind)))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
}
