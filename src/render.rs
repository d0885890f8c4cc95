//! `docker-etcd-register render`: a load balancer's configuration rendered
//! from the records of every host (docs/render.md "Load balancers: render"). Reads
//! the root once through the informer, which applies the watch's changes,
//! and after each change of the rows (debounced) renders every template
//! from one context and replaces, in order, each file whose bytes changed,
//! checked by `--check`; then `--reload`, once.

mod context;
mod debounce;
mod frontends;
#[cfg(test)]
mod hostile;
mod metrics;
mod output;
mod template;
mod view;

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::{debug, error, warn};

pub use context::{Backend, Catalog, Contest, Context, Port, Refused, Service};
pub use debounce::Debounce;
pub use frontends::{FrontendPortError, FrontendPorts};
pub use metrics::{RenderMetrics, Stage};
use output::Retry;
pub use output::{CommandError, Output, OutputError, Published, Reload, Reloaded};
pub use template::{ident, Template, TemplateError};

use crate::config::RenderConfig;
use crate::etcd::{RecordsReader, StoreError};
use crate::informer::{self, Informer, Source};
use crate::listing::{self, Index, Unreadables, Update};
use crate::supervise::sleep_until_some;

/// Why `render` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read the records from etcd: {0}")]
    Etcd(#[from] StoreError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// Renders once (`--once`), or until `shutdown`, surviving etcd outages.
/// `templates` are `config.files`' templates, loaded, in the same order;
/// `metrics_listener`, bound to `--metrics-addr`, serves `/metrics` and
/// `/healthz`.
pub async fn run(
    config: RenderConfig,
    templates: Vec<Template>,
    metrics_listener: Option<std::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RenderError> {
    let metrics = Arc::new(RenderMetrics::new());
    if let Some(listener) = metrics_listener {
        if let Err(error) = crate::metrics::spawn(listener, metrics.clone()) {
            warn!(error = %error, "cannot serve metrics");
        }
    }
    let mut reader = RecordsReader::new(&config.etcd.endpoints, config.etcd.security.clone());
    let files = templates
        .into_iter()
        .zip(&config.files)
        .map(|(template, file)| RenderedFile {
            template,
            output: Output::new(file.out.clone(), config.check.clone()),
        })
        .collect();
    let mut renderer = Renderer {
        files,
        reload: Reload::new(config.reload.clone()),
        catalog: Catalog::new(config.frontends.clone()),
        contested: Vec::new(),
        refused: Vec::new(),
        unreadable: Unreadables::default(),
        failing: None,
        metrics,
    };
    let source = Source {
        root: &config.root,
        prefix: &config.root,
        filter: &config.filter,
    };
    if config.once {
        let listing = informer::read(&mut reader, &source).await?;
        renderer.note_unreadable(&listing.index);
        renderer.render(&listing.index).await?;
        return Ok(());
    }
    tokio::pin!(shutdown);
    let follow = async {
        let mut informer = Informer::start(reader, source).await;
        renderer.metrics.set_etcd_watching(informer.is_watching());
        renderer.note_unreadable(informer.index());
        renderer.render_logging(informer.index()).await;
        let mut debounce = Debounce::new(config.debounce);
        // What changed since the last rendering.
        let mut pending = Update::default();
        loop {
            renderer.metrics.set_etcd_watching(informer.is_watching());
            if !informer.is_watching() {
                // Reading from scratch: not interrupted by a timer, which
                // would make it start over (a rendering now would show the
                // records from before the watch was lost anyway). It
                // returns once the records are read, changed or not, so
                // that a retry owed meanwhile runs then.
                let update = informer.next_change_or_loss().await;
                if update.any() {
                    pending = pending.and(update);
                    debounce.changed(Instant::now());
                }
                continue;
            }
            // A refused check or a failed reload owes a retry: the rendering
            // is published again then, changed or not.
            let retry_at = renderer.retry_at();
            let due = debounce.due().into_iter().chain(retry_at).min();
            // The timer first: a cluster that changes all the time is still
            // rendered once per window.
            tokio::select! {
                biased;
                () = sleep_until_some(due) => {
                    let now = Instant::now();
                    let retry_due = retry_at.is_some_and(|at| at <= now);
                    if debounce.take_if_due(now) || retry_due {
                        let changed = std::mem::take(&mut pending);
                        if changed.unreadable {
                            renderer.note_unreadable(informer.index());
                        }
                        if changed.rows || retry_due {
                            renderer.render_logging(informer.index()).await;
                        }
                    }
                }
                // Also returns when the watch is lost: the loop then says
                // so (`etcd_watching`) before it reads again.
                update = informer.next_change_or_loss() => {
                    if update.any() {
                        pending = pending.and(update);
                        debounce.changed(Instant::now());
                    }
                }
            }
        }
    };
    tokio::select! {
        () = follow => Ok(()),
        () = &mut shutdown => Ok(()),
    }
}

/// What one `render` run keeps from one rendering to the next.
struct Renderer {
    /// The services seen during this run.
    catalog: Catalog,
    /// The files, in the order they are published.
    files: Vec<RenderedFile>,
    /// `--reload`, once per rendering that replaced any file.
    reload: Reload,
    /// The ports several services claimed at the last rendering, said
    /// again only when they change.
    contested: Vec<Contest>,
    /// The ports outside `--frontend-port` at the last rendering, said
    /// again only when they change.
    refused: Vec<Refused>,
    /// The keys that are no records (docs/security.md "Trust boundary"), skipped and
    /// named in a WARN when they differ from the last ones said, so that a
    /// stray key is said once, not at every change.
    unreadable: Unreadables,
    /// After a rendering that failed before it could be published (the
    /// template, or writing the file): when to try again at the earliest.
    /// A retry of `--check` or `--reload` that is already due would
    /// otherwise render again at once, over and over.
    failing: Option<Retry>,
    /// What `--metrics-addr` serves.
    metrics: Arc<RenderMetrics>,
}

impl Renderer {
    fn note_unreadable(&mut self, index: &Index) {
        let unreadable = index.unreadables();
        if unreadable != self.unreadable {
            listing::warn_unreadable(&unreadable);
            self.metrics.set_skipped_keys(unreadable.count);
            self.unreadable = unreadable;
        }
    }

    /// Renders the records of `index` and publishes the texts: every
    /// template first (one that fails publishes none, so the files never
    /// mix two renderings through a template error), then each file in
    /// order, stopping at the first that cannot be replaced (a later file
    /// may name what it defines); then `--reload` if any was replaced.
    async fn render(&mut self, index: &Index) -> Result<(), RenderError> {
        self.metrics.rendering();
        let started = std::time::Instant::now();
        let context = Arc::new(self.catalog.context(index.rows()));
        if context.contested != self.contested {
            warn_contested(&context.contested);
            self.contested.clone_from(&context.contested);
        }
        if context.refused != self.refused {
            warn_refused(&context.refused);
            self.refused.clone_from(&context.refused);
        }
        let built = started.elapsed();
        let texts = self
            .files
            .iter()
            .map(|file| file.template.render(context.clone()))
            .collect::<Result<Vec<String>, TemplateError>>()
            .inspect_err(|_| self.metrics.failed(Stage::Template))?;
        drop(context);
        // The cost of a rendering, for an operator sizing --debounce: the
        // context (grouping and sorting the backends) and the templates.
        let millis = |duration: std::time::Duration| duration.as_secs_f64() * 1e3;
        debug!(
            records = index.len(),
            bytes = texts.iter().map(String::len).sum::<usize>(),
            context_ms = millis(built),
            template_ms = millis(started.elapsed() - built),
            "rendered"
        );
        let mut written = false;
        let mut published = Ok(());
        for (file, text) in self.files.iter_mut().zip(texts) {
            match file.output.publish(text).await {
                Ok(Published::Written) => written = true,
                Ok(Published::Unchanged) => {}
                Ok(Published::Held) => break,
                Err(error) => {
                    self.metrics.failed(match error {
                        OutputError::Refused { .. } => Stage::Check,
                        OutputError::Write { .. } => Stage::Write,
                    });
                    published = Err(error.into());
                    break;
                }
            }
        }
        if self.reload.after_rendering(written).await == Reloaded::Failed {
            self.metrics.failed(Stage::Reload);
        }
        published
    }

    /// When a retry is due: one owed by `--check` or `--reload` (no sooner
    /// than a failed rendering may be tried again), or that of a rendering
    /// that failed (a template error, a file that could not be written),
    /// which is tried again with backoff though nothing changed.
    fn retry_at(&self) -> Option<Instant> {
        let owed = self
            .files
            .iter()
            .filter_map(|file| file.output.next_retry())
            .chain(self.reload.next_retry())
            .min();
        match (owed, &self.failing) {
            (Some(owed), Some(failing)) => Some(owed.max(failing.at)),
            (Some(owed), None) => Some(owed),
            (None, Some(failing)) => Some(failing.at),
            (None, None) => None,
        }
    }

    /// Like `render`; a failure keeps the old files and is logged.
    async fn render_logging(&mut self, index: &Index) {
        let rendered = self.render(index).await;
        self.failing = match rendered {
            Ok(_) => None,
            Err(_) => Some(self.failing.take().map_or_else(Retry::first, Retry::again)),
        };
        if let Err(failure) = rendered {
            error!(error = %failure, "keeping the old file");
        }
        // Up to date when nothing is owed a retry.
        self.metrics.set_up_to_date(self.retry_at().is_none());
    }
}

/// One `--template` and the file it is written to.
struct RenderedFile {
    /// Compiled once at start.
    template: Template,
    /// The file and what was last done to it.
    output: Output,
}

/// How many contested ports, and how many services left out of one, are
/// named in the log; the rest are counted, so that services claiming
/// thousands of ports, or a thousand names claiming one, cost a few lines.
const NAMED_CONTESTS: usize = 10;

fn warn_contested(contested: &[Contest]) {
    for contest in contested.iter().take(NAMED_CONTESTS) {
        let left_out = &contest.left_out;
        warn!(
            port = contest.port,
            holder = contest.holder,
            left_out = ?&left_out[..left_out.len().min(NAMED_CONTESTS)],
            left_out_count = left_out.len(),
            "several services claim one port: only the holder's frontend is rendered"
        );
    }
    if contested.len() > NAMED_CONTESTS {
        warn!(
            more = contested.len() - NAMED_CONTESTS,
            total = contested.len(),
            "more ports that several services claim"
        );
    }
}

/// How many refused ports are named in the log; the rest are counted, so
/// that one container publishing thousands costs a line, not thousands.
const NAMED_REFUSED: usize = 10;

fn warn_refused(refused: &[Refused]) {
    for port in refused.iter().take(NAMED_REFUSED) {
        warn!(
            service = port.service,
            port = port.port,
            "a container port outside --frontend-port: no frontend"
        );
    }
    if refused.len() > NAMED_REFUSED {
        warn!(
            more = refused.len() - NAMED_REFUSED,
            total = refused.len(),
            "more container ports outside --frontend-port: no frontend"
        );
    }
}
