//! A client of one proxy during the rolling replacements: one request after
//! another, each on a new connection (as a new client would come), counting
//! the requests and those that failed (no answer, or a status other than
//! 200), each failure named on stderr with its time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::proxy::{self, Kind};
use crate::report::Failures;

/// Pause between two requests of one client.
const PAUSE: Duration = Duration::from_millis(5);

pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ClientLoop {
    pub fn start(kind: Kind, frontend: &str) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (stopping, sent, lost) = (stop.clone(), requests.clone(), failed.clone());
        let frontend = frontend.to_string();
        let thread = thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                if let Err(error) = proxy::answer(&frontend) {
                    lost.fetch_add(1, Ordering::SeqCst);
                    let at = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    crate::progress(&format!(
                        "{}: failed request at {:.3} s since the epoch: {error}",
                        kind.name(),
                        at.as_secs_f64()
                    ));
                }
                sent.fetch_add(1, Ordering::SeqCst);
                thread::sleep(PAUSE);
            }
        });
        ClientLoop {
            stop,
            requests,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops the loop; its requests and failures.
    pub fn finish(mut self) -> Failures {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        Failures {
            requests: self.requests.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
        }
    }
}

/// A run abandoned halfway stops its clients too, so that they do not
/// report the proxies being taken down as failures.
impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
