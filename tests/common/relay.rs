//! A unix-socket relay in front of the Docker socket, for the tests that cut
//! the agent off from Docker (or, with `relay_stall`, hold one request)
//! while the engine itself stays up for everyone else.

use std::collections::HashMap;
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::relay_stall;
use super::{require_docker, DOCKER_SOCKET};

/// A unix-socket relay in front of the Docker socket: the agent is pointed at
/// `docker_host()`, and the test can `cut` the connection (every live
/// connection closed, the listening socket removed so that new connections
/// are refused) and `restore` it.
pub struct DockerRelay {
    /// Holds the socket; removed on drop.
    _dir: tempfile::TempDir,
    /// The relay's socket, the agent's `--docker-host`.
    path: PathBuf,
    /// What the connections share: live ones, counts, the stall.
    pub(super) shared: Arc<RelayShared>,
    /// The accepting thread and its stop flag, while the relay listens.
    acceptor: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

#[derive(Default)]
pub(super) struct RelayShared {
    /// Live connections: both ends, so that `cut` can close them.
    connections: Mutex<HashMap<u64, (UnixStream, UnixStream)>>,
    /// The key of the next connection in `connections`.
    next_id: AtomicU64,
    /// Connections accepted so far: tells a test that the agent reconnected.
    accepted: AtomicUsize,
    /// Requests to hold back, and the request lines seen (`relay_stall`).
    pub(super) stall: relay_stall::Stall,
}

impl DockerRelay {
    /// A relay that listens at once.
    pub fn start() -> DockerRelay {
        let mut relay = DockerRelay::unstarted();
        relay.restore();
        relay
    }

    /// A relay whose socket does not exist yet, as if Docker had not started;
    /// `restore` makes it listen.
    pub fn unstarted() -> DockerRelay {
        require_docker();
        let dir = tempfile::tempdir().expect("relay temp dir");
        let path = dir.path().join("docker.sock");
        DockerRelay {
            _dir: dir,
            path,
            shared: Arc::default(),
            acceptor: None,
        }
    }

    /// `unix://<socket path>`, for `--docker-host`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Connections accepted since the relay was created.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn live_connections(&self) -> usize {
        self.shared.connections.lock().unwrap().len()
    }

    /// Stops listening (the socket file is removed, so connecting fails) and
    /// closes every live connection.
    pub fn cut(&mut self) {
        if let Some((stop, handle)) = self.acceptor.take() {
            stop.store(true, Ordering::SeqCst);
            handle.join().expect("relay acceptor thread");
        }
        let _ = std::fs::remove_file(&self.path);
        self.drop_connections();
    }

    /// Closes every live connection but keeps listening: to the agent this
    /// looks like a broken event stream while Docker itself stays up.
    pub fn drop_connections(&self) {
        let live: Vec<(UnixStream, UnixStream)> = self
            .shared
            .connections
            .lock()
            .unwrap()
            .drain()
            .map(|(_, ends)| ends)
            .collect();
        for (client, upstream) in live {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }

    /// Listens again at the same path.
    pub fn restore(&mut self) {
        if self.acceptor.is_some() {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path)
            .unwrap_or_else(|e| panic!("relay bind {}: {e}", self.path.display()));
        listener
            .set_nonblocking(true)
            .expect("non-blocking relay listener");
        let stop = Arc::new(AtomicBool::new(false));
        let shared = self.shared.clone();
        let stopped = stop.clone();
        let handle = thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => relay_connection(&shared, client),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener is dropped here: nothing accepts any more.
        });
        self.acceptor = Some((stop, handle));
    }
}

impl Drop for DockerRelay {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Connects `client` to the Docker socket and copies both ways on two
/// threads; the connection is registered before this returns, so `cut`
/// closes it even if it was accepted just before.
fn relay_connection(shared: &Arc<RelayShared>, client: UnixStream) {
    let _ = client.set_nonblocking(false);
    let Ok(upstream) = UnixStream::connect(DOCKER_SOCKET) else {
        return; // dropping `client` closes it
    };
    let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    ) else {
        return;
    };
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    shared.connections.lock().unwrap().insert(id, (c3, u3));
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    let shared = shared.clone();
    thread::spawn(move || {
        let back = thread::spawn(move || {
            let (mut from, mut to) = (u2, c2);
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
        relay_stall::forward_requests(&shared.stall, client, upstream);
        let _ = back.join();
        shared.connections.lock().unwrap().remove(&id);
    });
}
