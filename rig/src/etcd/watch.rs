//! An independent etcd watch that records every event, for tests that must
//! see each write the agent makes (not only the state it leaves).

use std::sync::{Arc, Mutex};

use etcd_client::{EventType, WatchOptions};

use super::client::{client, revision};
use crate::runtime;

/// One event seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// A delete (or a lease expiry); otherwise a put.
    pub delete: bool,
    pub key: String,
    /// Empty for a delete.
    pub value: String,
    /// The lease of a put (0 for none).
    pub lease: i64,
    /// The revision of the change: one per transaction.
    pub revision: i64,
}

/// An independent etcd watch on a key prefix, recording every event from the
/// revision after the one current when it was created. It never reconnects:
/// if its stream fails, `check` panics, so a test cannot miss events silently.
pub struct Watch {
    /// Every event so far, in etcd's order.
    events: Arc<Mutex<Vec<WatchEvent>>>,
    /// Why the stream ended, once it has: events may be missing from then on.
    failure: Arc<Mutex<Option<String>>>,
    /// The task that reads the stream; aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    pub fn prefix(endpoint: &str, prefix: &str) -> Watch {
        let start = revision(endpoint) + 1;
        let mut c = client(endpoint);
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = runtime()
            .block_on(c.watch(prefix, Some(options)))
            .unwrap_or_else(|e| panic!("etcd watch {prefix}: {e}"));
        let events = Arc::new(Mutex::new(Vec::new()));
        let failure = Arc::new(Mutex::new(None));
        let (sink, failed) = (events.clone(), failure.clone());
        let task = runtime().spawn(async move {
            let reason = loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            break format!("watch canceled: {}", response.cancel_reason());
                        }
                        let mut sink = sink.lock().unwrap();
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            sink.push(WatchEvent {
                                delete: event.event_type() == EventType::Delete,
                                key: kv.key_str().unwrap_or_default().to_string(),
                                value: kv.value_str().unwrap_or_default().to_string(),
                                lease: kv.lease(),
                                revision: kv.mod_revision(),
                            });
                        }
                    }
                    Ok(None) => break "watch stream ended".to_string(),
                    Err(e) => break format!("watch stream failed: {e}"),
                }
            };
            *failed.lock().unwrap() = Some(reason);
        });
        Watch {
            events,
            failure,
            task,
        }
    }

    /// Every event so far; panics if the watch has failed.
    pub fn events(&self) -> Vec<WatchEvent> {
        self.check();
        self.events.lock().unwrap().clone()
    }

    /// Panics if the watch stream failed (events may have been missed).
    pub fn check(&self) {
        if let Some(reason) = self.failure.lock().unwrap().clone() {
            panic!("the independent etcd watch is broken: {reason}");
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why [`follow_prefix`] could not open its watch.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("etcd watch: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd watch: closed at once")]
    Closed,
    #[error("etcd watch: the first response is not the creation")]
    NotCreated,
}

/// Opens a watch on `prefix` and returns once etcd has confirmed it, so
/// that every later change is seen; from then on a task on the current
/// runtime hands `on_response` each response with the moment it arrived
/// (the benchmarks time stages by it), until the stream ends.
pub async fn follow_prefix(
    endpoint: &str,
    prefix: &str,
    mut on_response: impl FnMut(&etcd_client::WatchResponse, std::time::Instant) + Send + 'static,
) -> Result<(), FollowError> {
    let mut client = super::client::connect(endpoint).await?;
    let mut stream = client
        .watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await?;
    let first = stream.message().await?.ok_or(FollowError::Closed)?;
    if !first.created() {
        return Err(FollowError::NotCreated);
    }
    tokio::spawn(async move {
        // The client must live as long as the stream.
        let _client = client;
        while let Ok(Some(response)) = stream.message().await {
            on_response(&response, std::time::Instant::now());
        }
    });
    Ok(())
}
