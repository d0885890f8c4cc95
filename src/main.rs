//! `docker-etcd-register`: parses the configuration, sets up logging and the
//! runtime, and runs the agent (or `list`, `render`) until SIGTERM or SIGINT; maps the
//! outcome to an exit code. Everything else is the library (`src/lib.rs`).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use docker_etcd_register::{agent, config, list, render};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// Exit code for configuration errors (README: "Configuration").
const EXIT_CONFIG: u8 = 2;
/// Exit code when the agent cannot run at all (no runtime, no signals).
const EXIT_FAILURE: u8 = 1;
/// `--once`: the prefix is not exact after the reconcile.
const EXIT_NOT_EXACT: u8 = 1;

fn main() -> ExitCode {
    let config = match config::Cli::parse().into_mode() {
        Ok(config::Mode::Agent(config)) => *config,
        Ok(config::Mode::List(config)) => return list(*config),
        Ok(config::Mode::Render(config)) => return render(*config),
        Err(error) => {
            eprintln!("docker-etcd-register: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(config.log_format, "info");
    let metrics_listener = match bind_metrics(
        config.metrics_addr,
        "--metrics-addr (env REGISTER_METRICS_ADDR)",
    ) {
        Ok(listener) => listener,
        Err(exit) => return exit,
    };
    match run(config, metrics_listener) {
        Ok(agent::Outcome::Stopped | agent::Outcome::Exact) => ExitCode::SUCCESS,
        Ok(agent::Outcome::NotExact) => ExitCode::from(EXIT_NOT_EXACT),
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "cannot run");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The metrics port of `addr`, bound before anything else runs, so that a
/// busy port is a configuration error reported at once (`flag` names it).
fn bind_metrics(
    addr: Option<std::net::SocketAddr>,
    flag: &str,
) -> Result<Option<std::net::TcpListener>, ExitCode> {
    addr.map(std::net::TcpListener::bind)
        .transpose()
        .map_err(|error| {
            eprintln!("docker-etcd-register: invalid {flag}: cannot listen: {error}");
            ExitCode::from(EXIT_CONFIG)
        })
}

/// `list`: prints the records; 1 when etcd cannot be read.
fn list(config: config::ListConfig) -> ExitCode {
    // Only trouble goes to stderr; stdout is the list.
    init_logging(config::LogFormat::Text, "warn");
    let result = block_on(|shutdown| list::run(config, shutdown));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("docker-etcd-register: {error:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `render`: 2 when the template is unusable, 1 when `--once` cannot read
/// etcd or write the file.
fn render(config: config::RenderConfig) -> ExitCode {
    init_logging(config::LogFormat::Text, "info");
    let templates: Result<Vec<_>, _> = config
        .files
        .iter()
        .map(|file| render::Template::load(&file.template))
        .collect();
    let templates = match templates {
        Ok(templates) => templates,
        Err(error) => {
            eprintln!("docker-etcd-register: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let metrics_listener = match bind_metrics(config.metrics_addr, "--metrics-addr") {
        Ok(listener) => listener,
        Err(exit) => return exit,
    };
    let result = block_on(|shutdown| async move {
        render::run(config, templates, metrics_listener, shutdown)
            .await
            .map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "cannot render");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(
    config: config::Config,
    metrics_listener: Option<std::net::TcpListener>,
) -> anyhow::Result<agent::Outcome> {
    block_on(|shutdown| agent::run(config, metrics_listener, shutdown))
}

/// Runs `work` on a single-threaded runtime, handing it the shutdown signal.
fn block_on<T, F>(work: impl FnOnce(Shutdown) -> F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().context("installing signal handlers")?;
        work(Box::pin(shutdown)).await
    })
}

/// The shutdown signal handed to `agent::run` and `list::run`.
type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// One event per line on stderr (journald), level from `RUST_LOG`, else
/// `default_level`.
fn init_logging(format: config::LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        config::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
