//! The rendered files: each written atomically (a temporary file beside
//! it, checked by `--check`, then renamed over it), only when its bytes
//! change; and `--reload`, run once after a rendering that replaced any.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use backon::ExponentialBackoff;
use tokio::time::Instant;
use tracing::{error, info};

use crate::supervise::doubling;

/// Longest a `--check` or `--reload` command may run: a hung command must
/// not stop `render` for good (it is killed then).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a failed command's output is logged.
const OUTPUT_TAIL_CHARS: usize = 2000;
/// Mode of a new file when there is no old one to copy it from.
const NEW_FILE_MODE: u32 = 0o644;
/// A refused `--check` or a failed `--reload` is tried again after this
/// long, doubling up to [`LAST_RETRY_DELAY`]: a check that timed out on a
/// loaded machine, or a load balancer that was restarting, passes later.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
const LAST_RETRY_DELAY: Duration = Duration::from_secs(60);

/// When something that failed is tried again: a refused check, a failed
/// reload, a rendering that failed before it could be published.
#[derive(Debug)]
pub(super) struct Retry {
    /// When it is due.
    pub(super) at: Instant,
    /// The delays after further failures.
    delays: ExponentialBackoff,
}

impl Retry {
    pub(super) fn first() -> Self {
        let mut delays = doubling(FIRST_RETRY_DELAY, LAST_RETRY_DELAY);
        let delay = delays.next().unwrap_or(LAST_RETRY_DELAY);
        Self {
            at: Instant::now() + delay,
            delays,
        }
    }

    pub(super) fn again(mut self) -> Self {
        let delay = self.delays.next().unwrap_or(LAST_RETRY_DELAY);
        self.at = Instant::now() + delay;
        self
    }

    fn is_due(&self) -> bool {
        Instant::now() >= self.at
    }
}

/// Why the file could not be replaced.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--check refused the new {path}: {source}")]
    Refused {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
}

/// Why a `--check` or `--reload` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {COMMAND_TIMEOUT:?}")]
    TimedOut { command: String },
    #[error("`{command}` failed ({status}): {output}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
}

/// What one publication did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The file already holds these bytes: nothing written.
    Unchanged,
    /// The file was replaced.
    Written,
    /// `--check` refused these bytes before and their retry is not due:
    /// the old file stays, and so do the files published after it.
    Held,
}

/// One output file and what was last done to it.
pub struct Output {
    /// The file the load balancer reads.
    path: PathBuf,
    /// `--check`, `{}` standing for the new file.
    check: Option<String>,
    /// The bytes the file holds (read at start, so that a restart with an
    /// unchanged cluster neither rewrites nor reloads).
    written: Option<String>,
    /// The last bytes `--check` refused, and when they are checked again
    /// (or at once, when the rendering changes).
    refused: Option<(String, Retry)>,
}

impl Output {
    pub fn new(path: PathBuf, check: Option<String>) -> Self {
        let written = std::fs::read_to_string(&path).ok();
        Self {
            path,
            check,
            written,
            refused: None,
        }
    }

    /// When a refused check is due again, if one is owed: the caller
    /// publishes the current rendering again then.
    pub fn next_retry(&self) -> Option<Instant> {
        self.refused.as_ref().map(|(_, retry)| retry.at)
    }

    /// Makes the file hold `text`, if it does not already and `--check`
    /// accepts it. A refused check is tried again with backoff, at
    /// [`Output::next_retry`]; the same bytes are not checked before then.
    pub async fn publish(&mut self, text: String) -> Result<Published, OutputError> {
        if self.written.as_ref() == Some(&text) {
            self.refused = None;
            return Ok(Published::Unchanged);
        }
        let earlier_refusal = match self.refused.take() {
            Some((refused, retry)) if refused == text => {
                if !retry.is_due() {
                    self.refused = Some((refused, retry));
                    return Ok(Published::Held);
                }
                Some(retry)
            }
            _ => None,
        };
        let staged = self.stage(&text)?;
        if let Some(check) = &self.check {
            let command = check.replace("{}", &shell_quote(staged.path()));
            if let Err(refusal) = run_command(&command).await {
                let retry = earlier_refusal.map_or_else(Retry::first, Retry::again);
                self.refused = Some((text, retry));
                return Err(OutputError::Refused {
                    path: self.path.clone(),
                    source: refusal,
                });
            }
        }
        staged
            .persist(&self.path)
            .map_err(|error| self.write_error(error.error))?;
        self.written = Some(text);
        info!(out = %self.path.display(), "rendered file written");
        Ok(Published::Written)
    }

    /// The new bytes in a temporary file in the output's directory (so that
    /// the rename is atomic), with the old file's mode.
    fn stage(&self, text: &str) -> Result<tempfile::NamedTempFile, OutputError> {
        let directory = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mode = std::fs::metadata(&self.path)
            .map(|m| m.permissions().mode())
            .unwrap_or(NEW_FILE_MODE);
        let mut staged = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(directory)
            .map_err(|e| self.write_error(e))?;
        staged
            .write_all(text.as_bytes())
            .and_then(|()| staged.as_file().sync_all())
            .map_err(|e| self.write_error(e))?;
        Ok(staged)
    }

    fn write_error(&self, source: std::io::Error) -> OutputError {
        OutputError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

/// What [`Reload::after_rendering`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// Nothing to reload, or no `--reload`.
    NotRun,
    Done,
    /// The command failed; it is owed a retry.
    Failed,
}

/// `--reload`, run once after a rendering that replaced any file, and
/// again with backoff until it succeeds.
pub struct Reload {
    /// `--reload`; `None`: nothing to run.
    command: Option<String>,
    /// A file was replaced but the command failed: when it runs again.
    owed: Option<Retry>,
}

impl Reload {
    pub fn new(command: Option<String>) -> Self {
        Self {
            command,
            owed: None,
        }
    }

    /// When a failed reload runs again, if one is owed.
    pub fn next_retry(&self) -> Option<Instant> {
        self.owed.as_ref().map(|retry| retry.at)
    }

    /// After a rendering: runs the command if it replaced a file
    /// (`written`), or if an earlier reload failed and its retry is due.
    pub async fn after_rendering(&mut self, written: bool) -> Reloaded {
        if written {
            // New bytes: a reload owed for older ones starts its backoff over.
            self.owed = None;
        }
        if written || self.owed.as_ref().is_some_and(Retry::is_due) {
            self.run().await
        } else {
            Reloaded::NotRun
        }
    }

    /// Runs the command; a failure is logged and owed a retry.
    async fn run(&mut self) -> Reloaded {
        let Some(command) = &self.command else {
            return Reloaded::NotRun;
        };
        match run_command(command).await {
            Ok(()) => {
                info!(command, "reloaded");
                self.owed = None;
                Reloaded::Done
            }
            Err(error) => {
                let retry = match self.owed.take() {
                    Some(retry) => retry.again(),
                    None => Retry::first(),
                };
                error!(error = %error, retry_in = ?retry.at.saturating_duration_since(Instant::now()), "the reload command failed; trying again");
                self.owed = Some(retry);
                Reloaded::Failed
            }
        }
    }
}

/// Runs `command` with `sh -c`; an error unless it exits 0 in time.
async fn run_command(command: &str) -> Result<(), CommandError> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child)
        .await
        .map_err(|_| CommandError::TimedOut {
            command: command.to_owned(),
        })?
        .map_err(|source| CommandError::Spawn {
            command: command.to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    let text = text.trim();
    let skip = text.chars().count().saturating_sub(OUTPUT_TAIL_CHARS);
    Err(CommandError::Failed {
        command: command.to_owned(),
        status: output.status,
        output: text.chars().skip(skip).collect(),
    })
}

/// `path` as one word of `sh`: in single quotes, each `'` written `'\''`.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_paths_are_one_word() {
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }

    /// The files in `dir`, by name.
    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn written_once_per_change_then_reloaded_and_nothing_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.cfg");
        let reloads = dir.path().join("reloads");
        let mut reload = Reload::new(Some(format!("echo >> {}", shell_quote(&reloads))));
        let mut output = Output::new(path.clone(), None);
        for (text, expected) in [
            ("a\n", Published::Written),
            ("a\n", Published::Unchanged),
            ("b\n", Published::Written),
        ] {
            let published = output.publish(text.into()).await.unwrap();
            assert_eq!(published, expected, "{text:?}");
            reload
                .after_rendering(published == Published::Written)
                .await;
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        assert_eq!(
            std::fs::read_to_string(&reloads).unwrap(),
            "\n\n",
            "one reload per write"
        );
        assert_eq!(
            files(dir.path()),
            ["lb.cfg", "reloads"],
            "no temporary file left"
        );

        // A restart with the same rendering neither writes nor reloads.
        let mut restarted = Output::new(path, None);
        assert_eq!(
            restarted.publish("b\n".into()).await.unwrap(),
            Published::Unchanged
        );
    }

    #[tokio::test]
    async fn a_refused_file_leaves_the_old_one_and_is_checked_again_only_after_a_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.cfg");
        let checks = dir.path().join("checks");
        // Accepts a file holding "good" only, and counts its runs.
        let check = format!("echo >> {}; grep -q good {{}}", shell_quote(&checks));
        let mut output = Output::new(path.clone(), Some(check));
        let check_runs = || std::fs::read_to_string(&checks).unwrap().lines().count();
        assert_eq!(
            output.publish("good\n".into()).await.unwrap(),
            Published::Written
        );
        assert_eq!(output.next_retry(), None);
        let refused = output.publish("bad\n".into()).await;
        assert!(
            matches!(refused, Err(OutputError::Refused { .. })),
            "{refused:?}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "good\n");
        let retry = output.next_retry().expect("a retry of the check");
        assert_eq!(
            output.publish("bad\n".into()).await.unwrap(),
            Published::Held,
            "not checked again before its retry"
        );
        assert_eq!(check_runs(), 2);

        tokio::time::sleep_until(retry).await;
        let refused_again = output.publish("bad\n".into()).await;
        assert!(matches!(refused_again, Err(OutputError::Refused { .. })));
        assert_eq!(check_runs(), 3, "checked again once due");
        let later = output.next_retry().unwrap();
        assert!(later - retry >= FIRST_RETRY_DELAY, "the delay doubles");

        // The cluster changes back: no retry is owed any more.
        assert_eq!(
            output.publish("good\n".into()).await.unwrap(),
            Published::Unchanged
        );
        assert_eq!(output.next_retry(), None);
        assert_eq!(
            files(dir.path()),
            ["checks", "lb.cfg"],
            "no temporary file left"
        );
    }

    #[tokio::test]
    async fn a_failed_reload_is_run_again_after_a_backoff_until_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let reloads = dir.path().join("reloads");
        let ready = dir.path().join("ready");
        // Fails until `ready` exists; counts its runs.
        let mut reload = Reload::new(Some(format!(
            "echo >> {}; test -e {}",
            shell_quote(&reloads),
            shell_quote(&ready)
        )));
        let reload_runs = || std::fs::read_to_string(&reloads).unwrap().lines().count();
        reload.after_rendering(true).await;
        let retry = reload.next_retry().expect("a retry of the reload");
        reload.after_rendering(false).await;
        assert_eq!(reload_runs(), 1, "not run again before its retry");

        std::fs::write(&ready, "").unwrap();
        tokio::time::sleep_until(retry).await;
        reload.after_rendering(false).await;
        assert_eq!(reload_runs(), 2);
        assert_eq!(reload.next_retry(), None, "reloaded: nothing owed");
    }
}
