//! A silent network partition between one agent and etcd: a TCP relay in
//! front of an etcd client port that can stop carrying bytes while every
//! connection stays open, as a firewall that drops packets or a dead switch
//! does (no reset, no close: the agent learns nothing from the socket).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::test_port;

/// How often a blocked direction looks whether the partition healed.
const POLL: Duration = Duration::from_millis(20);

/// The relay; the agent is given `endpoint()` instead of etcd's.
pub struct Partition {
    /// `127.0.0.1:<port>` the relay listens on.
    addr: String,
    /// While set, nothing is carried in either direction.
    blocked: Arc<AtomicBool>,
    /// Set on drop: the threads end.
    stopped: Arc<AtomicBool>,
}

impl Partition {
    /// A relay to etcd's client endpoint `http://127.0.0.1:<port>`.
    pub fn to(etcd_endpoint: &str) -> Partition {
        let target = etcd_endpoint
            .strip_prefix("http://")
            .unwrap_or(etcd_endpoint)
            .to_owned();
        let addr = format!("127.0.0.1:{}", test_port());
        let listener = TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let blocked = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let (b, s) = (Arc::clone(&blocked), Arc::clone(&stopped));
        thread::spawn(move || accept(listener, &target, &b, &s));
        Partition {
            addr,
            blocked,
            stopped,
        }
    }

    /// The agent's `--etcd-endpoints`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on nothing passes; connections stay open.
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
    }

    /// Bytes pass again, those held back first.
    pub fn heal(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.heal();
    }
}

fn accept(
    listener: TcpListener,
    target: &str,
    blocked: &Arc<AtomicBool>,
    stopped: &Arc<AtomicBool>,
) {
    while !stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let (b, s) = (Arc::clone(blocked), Arc::clone(stopped));
                    thread::spawn(move || carry(from, to, &b, &s));
                }
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Copies `from` → `to`; while blocked, reads nothing more and holds what
/// it read.
fn carry(mut from: TcpStream, mut to: TcpStream, blocked: &AtomicBool, stopped: &AtomicBool) {
    let mut buffer = [0u8; 16 * 1024];
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    while !stopped.load(Ordering::SeqCst) {
        if blocked.load(Ordering::SeqCst) {
            thread::sleep(POLL);
            continue;
        }
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        while blocked.load(Ordering::SeqCst) && !stopped.load(Ordering::SeqCst) {
            thread::sleep(POLL);
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
