//! One new backend followed along the path to traffic through every proxy
//! at once: after `docker run` returned, when its record reached etcd (the
//! agent), when each proxy's file held it (`render`, its debounce included)
//! and when it first served a request through each proxy (the proxy taking
//! the file). A thread per proxy polls its file, then, once the file holds
//! the backend, its frontend: the backend cannot be served before, and the
//! proxies are not flooded with requests while `render` is still waiting.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::proxy::Proxy;
use crate::records::Records;
use rig::process::check_interrupted;

/// Longest a backend may take to be served (or to leave every file) before
/// the run is abandoned.
const STAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two reads of a proxy's file: cheap, so often.
const FILE_POLL: Duration = Duration::from_millis(1);
/// Between two requests to a proxy's frontend (each on a new connection).
const REQUEST_POLL: Duration = Duration::from_millis(2);

/// Milliseconds after `docker run` returned; the record may come before.
#[derive(Debug, Clone)]
pub struct StartTimes {
    /// The record's arrival in etcd: shared by every proxy.
    pub record_ms: f64,
    /// Per proxy, in the order of the proxies.
    pub file_ms: Vec<f64>,
    pub served_ms: Vec<f64>,
}

/// When the backend reached one proxy.
struct Reached {
    file: Instant,
    served: Instant,
}

/// Follows the backend `container` (started when `docker run` returned at
/// `ran`) until it has served a request through every proxy.
pub fn follow(
    proxies: &[Proxy],
    records: &Records,
    container: &str,
    ran: Instant,
) -> Result<StartTimes> {
    let reached: Vec<Result<Reached>> = thread::scope(|scope| {
        let followers: Vec<_> = proxies
            .iter()
            .map(|proxy| scope.spawn(|| follow_one(proxy, records, container, ran)))
            .collect();
        followers
            .into_iter()
            .map(|f| {
                f.join()
                    .unwrap_or_else(|_| Err(anyhow!("a follower panicked")))
            })
            .collect()
    });
    let reached: Vec<Reached> = reached.into_iter().collect::<Result<_>>()?;
    let record = records.wait(container)?;
    let ms = |at: Instant| signed_ms(ran, at);
    Ok(StartTimes {
        record_ms: ms(record.at),
        file_ms: reached.iter().map(|r| ms(r.file)).collect(),
        served_ms: reached.iter().map(|r| ms(r.served)).collect(),
    })
}

fn follow_one(proxy: &Proxy, records: &Records, container: &str, ran: Instant) -> Result<Reached> {
    let hostname = &container[..12];
    let deadline = ran + STAGE_TIMEOUT;
    let mut file = None;
    loop {
        check_interrupted()?;
        if Instant::now() > deadline {
            let stage = match file {
                None => "its file never held",
                Some(_) => "it never served",
            };
            bail!(
                "{}: {stage} {hostname} within {STAGE_TIMEOUT:?}",
                proxy.kind.name()
            );
        }
        match file {
            None => {
                let port = records.get(container).map(|r| r.public_port);
                if port.is_some_and(|port| proxy.file_holds(port)) {
                    file = Some(Instant::now());
                    continue;
                }
                thread::sleep(FILE_POLL);
            }
            Some(file) => {
                if proxy.answer().as_deref() == Ok(hostname) {
                    return Ok(Reached {
                        file,
                        served: Instant::now(),
                    });
                }
                thread::sleep(REQUEST_POLL);
            }
        }
    }
}

/// Waits until no proxy's file holds the removed backend `container`, so
/// that the next start begins from one backend everywhere.
pub fn wait_left(proxies: &[Proxy], records: &Records, container: &str) -> Result<()> {
    let port = records.wait(container)?.public_port;
    let deadline = Instant::now() + STAGE_TIMEOUT;
    while let Some(proxy) = proxies.iter().find(|p| p.file_holds(port)) {
        check_interrupted()?;
        if Instant::now() > deadline {
            bail!(
                "{}: its file still holds the removed {} after {STAGE_TIMEOUT:?}",
                proxy.kind.name(),
                &container[..12]
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn signed_ms(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(after) => after.as_secs_f64() * 1e3,
        None => -(from.duration_since(to).as_secs_f64() * 1e3),
    }
}
