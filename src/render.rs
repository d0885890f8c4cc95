//! `docker-etcd-register render`: a load balancer's configuration rendered
//! from the records of every host (README "Load balancers: render"). Reads
//! the root in pages through `etcd::RecordsReader`, watches it, and after
//! each change (debounced) renders the template and replaces the file if its
//! bytes changed, checked by `--check`, followed by `--reload`.

mod context;
mod debounce;
mod output;
mod template;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

pub use context::{Backend, Catalog, Context, Port, Service};
pub use debounce::Debounce;
pub use output::{CommandError, Output, OutputError, Published};
pub use template::{ident, Template, TemplateError};

use crate::config::RenderConfig;
use crate::etcd::{PrefixWatch, RecordsReader, StoreError};
use crate::listing::{Filter, Row, Rows};

/// Pause before reading again after etcd failed.
const RETRY: Duration = Duration::from_secs(1);

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
    let mut renderer = Renderer {
        reader: RecordsReader::new(&config.etcd.endpoints, config.etcd.security.clone()),
        output: Output::new(
            config.out.clone(),
            config.check.clone(),
            config.reload.clone(),
        ),
        catalog: Catalog::default(),
        template,
        config,
    };
    if renderer.config.once {
        let (rows, _) = renderer.read().await?;
        renderer.render(&rows).await?;
        return Ok(());
    }
    tokio::pin!(shutdown);
    tokio::select! {
        () = renderer.follow() => Ok(()),
        () = &mut shutdown => Ok(()),
    }
}

/// The state of one `render` run.
struct Renderer {
    /// Flags: root, debounce, output.
    config: RenderConfig,
    /// Reads and watches every host's records.
    reader: RecordsReader,
    /// The services seen during this run.
    catalog: Catalog,
    /// Compiled once at start.
    template: Template,
    /// The rendered file.
    output: Output,
}

impl Renderer {
    /// Renders, then again after every change; never returns.
    async fn follow(&mut self) {
        let mut failing = false;
        loop {
            let outcome = match self.read_and_watch().await {
                Ok((rows, watch)) => {
                    if std::mem::take(&mut failing) {
                        info!("etcd answers again");
                    }
                    self.render_logging(&rows).await;
                    drop(rows);
                    self.next_change(watch).await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                if !failing {
                    warn!(error = %error, "cannot read etcd; keeping the rendered file, retrying");
                    failing = true;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }

    /// Every record under the root, as rows, and the revision read at.
    async fn read(&mut self) -> Result<(Vec<Row>, i64), StoreError> {
        let root = self.config.root.clone();
        let filter = Filter::default();
        let read = self
            .reader
            .read(
                &root,
                || Rows::new(&root, &filter),
                |rows, entry| rows.add(entry.key, entry.value),
            )
            .await?;
        let (rows, unreadable) = read.content.finish();
        if unreadable.count > 0 {
            // Not a warning: a stray key would repeat it on every change.
            tracing::debug!(count = unreadable.count, "keys that are no records skipped");
        }
        Ok((rows, read.revision))
    }

    async fn read_and_watch(&mut self) -> Result<(Vec<Row>, PrefixWatch), StoreError> {
        let (rows, revision) = self.read().await?;
        let watch = self.reader.watch(&self.config.root, revision + 1).await?;
        Ok((rows, watch))
    }

    /// Waits for a change, then for the debounce window to close.
    async fn next_change(&self, mut watch: PrefixWatch) -> Result<(), StoreError> {
        let mut debounce = Debounce::new(self.config.debounce);
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

    /// Renders `rows` and publishes the text.
    async fn render(&mut self, rows: &[Row]) -> Result<Published, RenderError> {
        let context = self.catalog.context(rows);
        let text = self.template.render(&context)?;
        Ok(self.output.publish(text).await?)
    }

    /// Like `render`; a failure keeps the old file and is logged.
    async fn render_logging(&mut self, rows: &[Row]) {
        if let Err(failure) = self.render(rows).await {
            error!(error = %failure, out = %self.config.out.display(), "keeping the old file");
        }
    }
}
