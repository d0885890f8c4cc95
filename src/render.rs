//! `docker-etcd-register render`: a load balancer's configuration rendered
//! from the records of every host (README "Load balancers: render"). Reads
//! the root in pages through `etcd::RecordsReader`, watches it, and after
//! each change (debounced) renders the template and replaces the file if its
//! bytes changed, checked by `--check`, followed by `--reload`.

mod context;
mod debounce;
mod frontends;
#[cfg(test)]
mod hostile;
mod output;
mod template;

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, warn};

pub use context::{Backend, Catalog, Contest, Context, Port, Refused, Service};
pub use debounce::Debounce;
pub use frontends::{FrontendPortError, FrontendPorts};
pub use output::{CommandError, Output, OutputError, Published};
pub use template::{ident, Template, TemplateError};

use crate::config::RenderConfig;
use crate::etcd::{PrefixWatch, RecordsReader, StoreError};
use crate::follow::{self, Listing, Source};
use crate::listing::{self, Row, Unreadables};

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
pub async fn run(
    config: RenderConfig,
    template: Template,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RenderError> {
    let mut reader = RecordsReader::new(&config.etcd.endpoints, config.etcd.security.clone());
    let mut renderer = Renderer {
        output: Output::new(
            config.out.clone(),
            config.check.clone(),
            config.reload.clone(),
        ),
        catalog: Catalog::new(config.frontends.clone()),
        template,
        contested: Vec::new(),
        refused: Vec::new(),
    };
    let source = Source {
        root: &config.root,
        prefix: &config.root,
        filter: &config.filter,
    };
    let out = config.out.display().to_string();
    if config.once {
        let listing = follow::read(&mut reader, &source).await?;
        note_unreadable(&listing, &mut Unreadables::default());
        renderer.render(&listing.rows).await?;
        return Ok(());
    }
    // A refused check or a failed reload owes a retry: the wait for the
    // next change ends then too, and the rendering is published again.
    let retry_at: Cell<Option<Instant>> = Cell::new(None);
    let mut skipped = Unreadables::default();
    let show = async |listing: Listing| {
        note_unreadable(&listing, &mut skipped);
        renderer.render_logging(&listing.rows, &out).await;
        retry_at.set(renderer.output.next_retry());
        Ok::<(), std::convert::Infallible>(())
    };
    let settle = async |watch: &mut PrefixWatch| {
        let retry = async {
            match retry_at.get() {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = next_change(watch, config.debounce) => changed,
            () = retry => Ok(()),
        }
    };
    tokio::pin!(shutdown);
    tokio::select! {
        _ = follow::follow(&mut reader, &source, show, settle) => Ok(()),
        () = &mut shutdown => Ok(()),
    }
}

/// Keys that are no records (README "Trust boundary") are skipped, and
/// named in a WARN when they differ from the last rendering's, so that a
/// stray key is said once, not at every change.
fn note_unreadable(listing: &Listing, last: &mut Unreadables) {
    if listing.unreadable != *last {
        listing::warn_unreadable(&listing.unreadable);
        *last = listing.unreadable.clone();
    }
}

/// Waits for a change, then for the debounce window to close.
async fn next_change(watch: &mut PrefixWatch, window: Duration) -> Result<(), StoreError> {
    let mut debounce = Debounce::new(window);
    loop {
        let due = debounce.due();
        let window_closes = async {
            match due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            changes = watch.next_changes() => {
                changes?;
                debounce.changed(Instant::now());
            }
            () = window_closes => {
                if debounce.take_if_due(Instant::now()) {
                    return Ok(());
                }
            }
        }
    }
}

/// What one `render` run keeps from one rendering to the next.
struct Renderer {
    /// The services seen during this run.
    catalog: Catalog,
    /// Compiled once at start.
    template: Template,
    /// The rendered file.
    output: Output,
    /// The ports several services claimed at the last rendering, said
    /// again only when they change.
    contested: Vec<Contest>,
    /// The ports outside `--frontend-port` at the last rendering, said
    /// again only when they change.
    refused: Vec<Refused>,
}

impl Renderer {
    /// Renders `rows` and publishes the text.
    async fn render(&mut self, rows: &[Row]) -> Result<Published, RenderError> {
        let context = self.catalog.context(rows);
        if context.contested != self.contested {
            warn_contested(&context.contested);
            self.contested.clone_from(&context.contested);
        }
        if context.refused != self.refused {
            warn_refused(&context.refused);
            self.refused.clone_from(&context.refused);
        }
        let text = self.template.render(&context)?;
        Ok(self.output.publish(text).await?)
    }

    /// Like `render`; a failure keeps the old file at `out` and is logged.
    async fn render_logging(&mut self, rows: &[Row], out: &str) {
        if let Err(failure) = self.render(rows).await {
            error!(error = %failure, out, "keeping the old file");
        }
    }
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
