//! Containers started under one label (a test's or a benchmark run's) and
//! removed again on drop, and image tags removed on drop.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use super::{docker, require_docker, try_docker, DockerError, IMAGE};

/// Label key of the tests' containers; the value is the test's id.
pub const LABEL_KEY: &str = "docker-etcd-register.test";
/// Concurrent `docker rm -f` commands when cleaning up: removing many
/// containers at once makes Docker 20.10's networking deadlock likelier
/// (moby/moby#42545, see `docker::HUNG`).
const CLEANUP_WORKERS: usize = 8;

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The containers of one test (or benchmark run), told apart from everyone
/// else's on the shared engine by their label; all of them are removed on
/// drop.
pub struct Containers {
    /// `KEY=VALUE`, given to every container this starts.
    label: String,
}

impl Containers {
    /// The containers of the test `test_id`: label `LABEL_KEY=<test_id>`.
    pub fn new(test_id: &str) -> Containers {
        Containers::with_label(format!("{LABEL_KEY}={test_id}"))
    }

    /// The containers carrying `label` (`KEY=VALUE`).
    pub fn with_label(label: String) -> Containers {
        require_docker();
        Containers { label }
    }

    /// `KEY=VALUE` carried by every container of this test.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// `docker run -d --label <label> ARGS...`; returns the full container id.
    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args)
            .unwrap_or_else(|e| panic!("docker run {args:?}: {e}"))
    }

    /// Like `run`, the error returned.
    pub fn try_run(&self, args: &[&str]) -> Result<String, DockerError> {
        let mut full = vec!["run", "-d", "--label", &self.label];
        full.extend_from_slice(args);
        let out = try_docker(&full)?;
        let id = out.lines().last().unwrap_or_default().to_string();
        if !is_container_id(&id) {
            return Err(DockerError::NotAnId(out));
        }
        Ok(id)
    }

    pub fn stop(&self, id: &str) {
        docker(&["stop", "-t", "1", id]);
    }

    pub fn kill(&self, id: &str) {
        docker(&["kill", id]);
    }

    pub fn rm_f(&self, id: &str) {
        docker(&["rm", "-f", id]);
    }

    /// Every container (running or not) carrying this test's label.
    pub fn all(&self) -> Vec<String> {
        self.try_all()
            .unwrap_or_else(|e| panic!("list the containers of {}: {e}", self.label))
    }

    /// Like `all`, the error returned.
    pub fn try_all(&self) -> Result<Vec<String>, DockerError> {
        let filter = format!("label={}", self.label);
        let listed = try_docker(&["ps", "-aq", "--no-trunc", "--filter", &filter])?;
        Ok(listed.lines().map(str::to_string).collect())
    }

    /// Removes every container of the label, a few at a time.
    pub fn try_cleanup(&self) -> Result<(), DockerError> {
        let ids = self.try_all()?;
        remove(&ids, CLEANUP_WORKERS)
    }

    /// Like `try_cleanup`, the error only printed: it also runs on drop.
    pub fn cleanup(&self) {
        if let Err(e) = self.try_cleanup() {
            eprintln!("cleanup of the containers of {}: {e}", self.label);
        }
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `docker rm -f` of every one of `ids`, `workers`-way; every one is tried,
/// the first failure is returned.
pub fn remove(ids: &[String], workers: usize) -> Result<(), DockerError> {
    let outcomes = parallel(ids.len(), workers, |i| {
        Ok::<_, DockerError>(try_docker(&["rm", "-f", &ids[i]]))
    })?;
    outcomes
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}

/// Runs `job(i)` for every `i < count` on `workers` threads; stops at the
/// first failure.
pub fn parallel<T: Send, E: Send>(
    count: usize,
    workers: usize,
    job: impl Fn(usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(count));
    let failure = Mutex::new(None);
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count || failure.lock().unwrap().is_some() {
                    break;
                }
                match job(i) {
                    Ok(v) => results.lock().unwrap().push(v),
                    Err(e) => {
                        failure.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
    });
    match failure.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(results.into_inner().unwrap()),
    }
}

/// Removes the image tags it holds on drop (`docker rmi` of a tag only
/// untags an image that has other tags; never give it `busybox:latest`).
pub struct TagGuard(pub Vec<String>);

impl TagGuard {
    /// Tags `IMAGE` as every one of `tags`.
    pub fn tag(tags: &[String]) -> TagGuard {
        require_docker();
        let guard = TagGuard(tags.to_vec());
        for tag in tags {
            assert_ne!(tag, IMAGE, "never untag {IMAGE}");
            docker(&["tag", IMAGE, tag]);
        }
        guard
    }
}

impl Drop for TagGuard {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["rmi", tag]).output();
        }
    }
}
