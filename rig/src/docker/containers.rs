//! Containers started under one label (a test's or a benchmark run's) and
//! removed again on drop, and image tags removed on drop.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use super::{DockerError, Engine, IMAGE};

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
    /// The engine whose CLI starts, lists and removes them.
    engine: Engine,
}

impl Containers {
    /// The Docker containers of the test `test_id`: label `LABEL_KEY=<test_id>`.
    pub fn new(test_id: &str) -> Containers {
        Containers::on(Engine::Docker, test_id)
    }

    /// The containers of the test `test_id` on `engine`.
    pub fn on(engine: Engine, test_id: &str) -> Containers {
        Containers::with_label_on(engine, format!("{LABEL_KEY}={test_id}"))
    }

    /// The Docker containers carrying `label` (`KEY=VALUE`).
    pub fn with_label(label: String) -> Containers {
        Containers::with_label_on(Engine::Docker, label)
    }

    /// The containers carrying `label` (`KEY=VALUE`) on `engine`.
    pub fn with_label_on(engine: Engine, label: String) -> Containers {
        engine.require();
        Containers { label, engine }
    }

    /// The engine these containers run on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// `KEY=VALUE` carried by every container of this test.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// `<engine> run -d --label <label> ARGS...`; returns the full container id.
    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args)
            .unwrap_or_else(|e| panic!("{} run {args:?}: {e}", self.engine.cli()))
    }

    /// Like `run`, the error returned. A published port that names no host
    /// port gets one of the tests' own (`crate::ports::pin_published`).
    pub fn try_run(&self, args: &[&str]) -> Result<String, DockerError> {
        self.try_start(&["run", "-d"], args)
    }

    /// `<engine> create --label <label> ARGS...` (see `run`): a container
    /// that is not started yet; its full id.
    pub fn create(&self, args: &[&str]) -> String {
        self.try_start(&["create"], args)
            .unwrap_or_else(|e| panic!("{} create {args:?}: {e}", self.engine.cli()))
    }

    fn try_start(&self, command: &[&str], args: &[&str]) -> Result<String, DockerError> {
        let pinned = crate::ports::pin_published(args);
        let mut full = command.to_vec();
        full.extend(["--label", &self.label]);
        full.extend(pinned.iter().map(String::as_str));
        let out = self.engine.try_cli(&full)?;
        let id = out.lines().last().unwrap_or_default().to_string();
        if !is_container_id(&id) {
            return Err(DockerError::NotAnId(out));
        }
        Ok(id)
    }

    pub fn stop(&self, id: &str) {
        self.engine.cli_out(&["stop", "-t", "1", id]);
    }

    pub fn kill(&self, id: &str) {
        self.engine.cli_out(&["kill", id]);
    }

    pub fn rm_f(&self, id: &str) {
        let mut args = self.engine.rm_f_args().to_vec();
        args.push(id);
        self.engine.cli_out(&args);
    }

    /// Every container (running or not) carrying this test's label.
    pub fn all(&self) -> Vec<String> {
        self.try_all()
            .unwrap_or_else(|e| panic!("list the containers of {}: {e}", self.label))
    }

    /// Like `all`, the error returned.
    pub fn try_all(&self) -> Result<Vec<String>, DockerError> {
        let filter = format!("label={}", self.label);
        let listed = self
            .engine
            .try_cli(&["ps", "-aq", "--no-trunc", "--filter", &filter])?;
        Ok(listed.lines().map(str::to_string).collect())
    }

    /// Removes every container of the label, a few at a time.
    pub fn try_cleanup(&self) -> Result<(), DockerError> {
        let ids = self.try_all()?;
        remove_on(self.engine, &ids, CLEANUP_WORKERS)
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
    remove_on(Engine::Docker, ids, workers)
}

/// `rm -f` on `engine` of every one of `ids`, `workers`-way.
pub fn remove_on(engine: Engine, ids: &[String], workers: usize) -> Result<(), DockerError> {
    let outcomes = parallel(ids.len(), workers, |i| {
        let mut args = engine.rm_f_args().to_vec();
        args.push(&ids[i]);
        Ok::<_, DockerError>(engine.try_cli(&args))
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

/// Removes the image tags it holds on drop (`rmi` of a tag only untags an
/// image that has other tags; never give it the test image itself).
pub struct TagGuard {
    /// The tags to remove.
    pub tags: Vec<String>,
    /// The engine whose storage holds them.
    engine: Engine,
}

impl TagGuard {
    /// Tags Docker's `IMAGE` as every one of `tags`.
    pub fn tag(tags: &[String]) -> TagGuard {
        TagGuard::tag_on(Engine::Docker, tags)
    }

    /// Tags the test image of `engine` as every one of `tags`.
    pub fn tag_on(engine: Engine, tags: &[String]) -> TagGuard {
        engine.require();
        let guard = TagGuard {
            tags: tags.to_vec(),
            engine,
        };
        for tag in tags {
            assert_ne!(tag, engine.image(), "never untag {}", engine.image());
            assert_ne!(tag, IMAGE, "never untag {IMAGE}");
            engine.cli_out(&["tag", engine.image(), tag]);
        }
        guard
    }
}

impl Drop for TagGuard {
    fn drop(&mut self) {
        for tag in &self.tags {
            let _ = Command::new(self.engine.cli()).args(["rmi", tag]).output();
        }
    }
}

/// A web backend in `containers`: busybox `httpd` on `port` inside the
/// container, published on loopback, answering `GET /` with the container's
/// hostname (its short id). It stops gracefully, as a real service does: on
/// SIGTERM it keeps serving for a second (a load balancer stops sending it
/// requests meanwhile: the agent drains its record at the signal), then
/// closes its listening socket and exits. The id of the container.
pub fn run_web_backend(containers: &Containers, port: u16) -> String {
    let publish = format!("127.0.0.1::{port}");
    let script = format!(
        "mkdir -p /www; hostname > /www/index.html; httpd -f -p {port} -h /www & \
         httpd=$!; trap 'sleep 1; kill $httpd; exit 0' TERM; wait"
    );
    let image = containers.engine().image();
    containers.run(&["-p", &publish, image, "sh", "-c", &script])
}
