//! The flags of `render` (docs/render.md "Load balancers: render") and their
//! validation into a [`RenderConfig`]. The etcd flags and variables are the
//! agent's (`EtcdArgs`, global).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::address::parse_metrics_addr;
use super::list::nonblank;
use super::{flag_error, ConfigError, EtcdTarget};
use crate::listing::Filter;
use crate::render::FrontendPorts;

/// The longest debounce accepted: beyond it a load balancer would lag the
/// cluster by more than a minute, which no one wants by mistake.
const MAX_DEBOUNCE_MS: u64 = 60_000;

#[derive(Debug, Args)]
pub(super) struct RenderArgs {
    /// Jinja-style template (minijinja) the load balancer's configuration is rendered from.
    /// Repeat `--template FILE --out FILE` for several files (Envoy's clusters and
    /// listeners): the n-th template is written to the n-th `--out`.
    #[arg(long, value_name = "FILE", required = true)]
    template: Vec<PathBuf>,

    /// File to write; replaced atomically, only when its bytes change.
    #[arg(long, value_name = "FILE", required = true)]
    out: Vec<PathBuf>,

    /// Command that must accept the new file before it replaces the old one
    /// (`{}` is the new file's path), e.g. `haproxy -c -f {}`.
    #[arg(long, value_name = "CMD")]
    check: Option<String>,

    /// Command run after each write, e.g. `nginx -s reload`.
    #[arg(long, value_name = "CMD")]
    reload: Option<String>,

    /// Milliseconds to wait after a change for more changes before rendering.
    #[arg(long, value_name = "MS", default_value = "200")]
    debounce: String,

    /// Render once and exit: 0 when written (or unchanged), 1 when etcd cannot be read.
    #[arg(long)]
    once: bool,

    /// Render only this service (its key segment, as `list` shows it); repeat it for several.
    /// Without it, every service is rendered.
    #[arg(long, value_name = "NAME")]
    service: Vec<String>,

    /// A container port (`80`) or range (`8000-8999`) that may be a frontend; repeat it
    /// or separate by commas. Without it, any port a record claims is one.
    #[arg(long, value_name = "PORTS")]
    frontend_port: Vec<String>,

    /// Serve Prometheus /metrics and /healthz of `render` on this address (e.g.
    /// 127.0.0.1:9732); off when unset.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
}

/// One `--template` and the `--out` it is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// The template file, read and compiled once at start.
    pub template: PathBuf,
    /// The rendered file; its directory also holds the temporary file.
    pub out: PathBuf,
}

/// The validated configuration of `render`.
#[derive(Debug, Clone)]
pub struct RenderConfig {
    /// The cluster the records are read from.
    pub etcd: EtcdTarget,
    /// The root of all keys, with a trailing `/` (`/registered/`).
    pub root: String,
    /// The files written, each from its template, published in this order
    /// (docs/render.md "Load balancers: render": a later file may name what an
    /// earlier one defines). Never empty.
    pub files: Vec<RenderedFile>,
    /// Run on each new file before it replaces its old one; `{}` is its path.
    pub check: Option<String>,
    /// Run once after each rendering that replaced at least one file.
    pub reload: Option<String>,
    /// How long changes are gathered before one rendering.
    pub debounce: Duration,
    /// Render once and exit.
    pub once: bool,
    /// Which records are rendered: only the services named by `--service`
    /// (docs/security.md "Trust boundary": who may claim a load balancer's ports).
    pub filter: Filter,
    /// Which container ports may be frontends (`--frontend-port`).
    pub frontends: FrontendPorts,
    /// Where `render`'s `/metrics` and `/healthz` are served (never port
    /// 0); off when `None`.
    pub metrics_addr: Option<SocketAddr>,
}

impl RenderArgs {
    pub(super) fn into_config(
        self,
        etcd: EtcdTarget,
        root: String,
    ) -> Result<RenderConfig, ConfigError> {
        let debounce_ms: u64 = self.debounce.trim().parse().map_err(|_| {
            flag_error(
                "--debounce",
                format!("{:?} is not a whole number of milliseconds", self.debounce),
            )
        })?;
        if debounce_ms > MAX_DEBOUNCE_MS {
            return Err(flag_error(
                "--debounce",
                format!("{debounce_ms} is above the maximum of {MAX_DEBOUNCE_MS} ms"),
            ));
        }
        let files = paired_files(self.template, self.out)?;
        let command = |flag, text: Option<String>| match text {
            Some(cmd) if cmd.trim().is_empty() => Err(flag_error(flag, "is empty")),
            other => Ok(other),
        };
        Ok(RenderConfig {
            etcd,
            root,
            files,
            check: command("--check", self.check)?,
            reload: command("--reload", self.reload)?,
            debounce: Duration::from_millis(debounce_ms),
            once: self.once,
            filter: Filter {
                services: nonblank(self.service),
                ..Filter::default()
            },
            frontends: FrontendPorts::parse(&self.frontend_port)
                .map_err(|e| flag_error("--frontend-port", e.to_string()))?,
            metrics_addr: self
                .metrics_addr
                .as_deref()
                .map(|a| parse_metrics_addr(a.trim()).map_err(|p| flag_error("--metrics-addr", p)))
                .transpose()?,
        })
    }
}

/// The n-th `--template` with the n-th `--out`: as many of each, every
/// `--out` a file of its own (two renderings racing for one file would
/// replace each other's bytes at every change).
fn paired_files(
    templates: Vec<PathBuf>,
    outs: Vec<PathBuf>,
) -> Result<Vec<RenderedFile>, ConfigError> {
    if templates.len() != outs.len() {
        return Err(flag_error(
            "--out",
            format!(
                "{} --template but {} --out: give them in pairs",
                templates.len(),
                outs.len()
            ),
        ));
    }
    for (n, out) in outs.iter().enumerate() {
        if out.file_name().is_none() {
            return Err(flag_error(
                "--out",
                format!("{} names no file", out.display()),
            ));
        }
        if outs[..n].contains(out) {
            return Err(flag_error(
                "--out",
                format!("{} is given twice", out.display()),
            ));
        }
    }
    Ok(templates
        .into_iter()
        .zip(outs)
        .map(|(template, out)| RenderedFile { template, out })
        .collect())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::{Cli, Mode};
    use super::*;

    fn render(args: &[&str]) -> Result<RenderConfig, String> {
        let mut full = vec![
            "docker-etcd-register",
            "render",
            "--template",
            "t.j2",
            "--out",
            "/x/out.cfg",
        ];
        full.extend_from_slice(args);
        match Cli::try_parse_from(full)
            .map_err(|e| e.to_string())?
            .into_mode()
        {
            Ok(Mode::Render(config)) => Ok(*config),
            Ok(other) => panic!("not render: {other:?}"),
            Err(error) => Err(error.to_string()),
        }
    }

    #[test]
    fn defaults_and_flags() {
        let config = render(&[]).unwrap();
        assert_eq!(config.debounce, Duration::from_millis(200));
        assert_eq!(config.root, "/registered/");
        assert!(!config.once && config.check.is_none() && config.reload.is_none());
        let config = render(&[
            "--debounce",
            "0",
            "--once",
            "--check",
            "haproxy -c -f {}",
            "--reload",
            "true",
            "--prefix",
            "lb",
        ])
        .unwrap();
        assert_eq!(config.debounce, Duration::ZERO);
        assert_eq!(config.root, "/lb/");
        assert_eq!(config.check.as_deref(), Some("haproxy -c -f {}"));
        assert!(config.once);
        assert_eq!(config.frontends, FrontendPorts::Any);
        let config = render(&["--frontend-port", "80", "--frontend-port", "8000-8999"]).unwrap();
        assert_eq!(
            config.frontends,
            FrontendPorts::parse(&["80,8000-8999"]).unwrap()
        );
    }

    #[test]
    fn mistakes_name_the_flag() {
        assert_eq!(
            render(&["--debounce", "soon"]).unwrap_err(),
            r#"invalid --debounce: "soon" is not a whole number of milliseconds"#
        );
        assert!(render(&["--debounce", "60001"])
            .unwrap_err()
            .starts_with("invalid --debounce: 60001 is above"));
        assert_eq!(
            render(&["--check", " "]).unwrap_err(),
            "invalid --check: is empty"
        );
        assert!(render(&["--frontend-port", "22-0"])
            .unwrap_err()
            .starts_with(r#"invalid --frontend-port: "22-0" is not a port"#));
        let long = "9".repeat(10_000);
        for garbage in [
            "127.0.0.1:0",
            "localhost:9732",
            "127.0.0.1",
            "",
            "[::1]:99999",
            &long,
        ] {
            let error = render(&["--metrics-addr", garbage]).unwrap_err();
            assert!(error.starts_with("invalid --metrics-addr: "), "{error}");
        }
        let config = render(&["--metrics-addr", " 127.0.0.1:9732 "]).unwrap();
        assert_eq!(config.metrics_addr, Some("127.0.0.1:9732".parse().unwrap()));
        assert_eq!(render(&[]).unwrap().metrics_addr, None);
    }

    #[test]
    fn templates_and_outs_pair_in_order() {
        let config = render(&["--template", "b.j2", "--out", "/x/b.cfg"]).unwrap();
        let pairs: Vec<(&str, &str)> = config
            .files
            .iter()
            .map(|f| (f.template.to_str().unwrap(), f.out.to_str().unwrap()))
            .collect();
        assert_eq!(pairs, [("t.j2", "/x/out.cfg"), ("b.j2", "/x/b.cfg")]);
        assert_eq!(
            render(&["--template", "b.j2"]).unwrap_err(),
            "invalid --out: 2 --template but 1 --out: give them in pairs"
        );
        assert_eq!(
            render(&["--template", "b.j2", "--out", "/x/./out.cfg"]).unwrap_err(),
            "invalid --out: /x/./out.cfg is given twice"
        );
        assert_eq!(
            render(&["--template", "b.j2", "--out", "/"]).unwrap_err(),
            "invalid --out: / names no file"
        );
    }
}
