//! The Docker side of the benchmark: containers started and removed through
//! the `docker` CLI (as an operator would), and a minimal HTTP/1.1 client
//! over the engine's unix socket — no process start in what is measured —
//! for the engine's event stream (its own `start` / `die` times, and when
//! they reach a subscriber) and the inspect floor.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::clock::now_ns;

pub const SOCKET: &str = "/var/run/docker.sock";
pub const IMAGE: &str = "busybox:latest";
/// Longest a single request to the engine may take before the run fails.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a `docker` command may take before the run fails.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- the CLI

/// Runs the `docker` CLI and returns its trimmed stdout; fails if it takes
/// longer than `CLI_TIMEOUT`.
pub fn docker(args: &[&str]) -> Result<String> {
    let subcommand = args.first().copied().unwrap_or_default();
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run the docker CLI")?;
    let stdout = read_all_in_background(child.stdout.take());
    let stderr = read_all_in_background(child.stderr.take());
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("docker {subcommand} did not finish within {CLI_TIMEOUT:?}; {HUNG}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let (stdout, stderr) = (joined(stdout), joined(stderr));
    if !status.success() {
        bail!("docker {subcommand} failed ({status}): {}", stderr.trim());
    }
    Ok(stdout.trim().to_string())
}

/// Why the engine may stop answering, and what to do about it.
pub const HUNG: &str = "dockerd may be deadlocked (Docker 20.10's networking can deadlock when \
    containers come and go quickly, moby/moby#42545): look for `semacquire` in the goroutine \
    dump `kill -USR1 $(pidof dockerd)` writes to /var/run/docker/, and restart dockerd";

fn read_all_in_background(stream: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stream) = stream {
            let _ = stream.read_to_string(&mut text);
        }
        text
    })
}

fn joined(reader: JoinHandle<String>) -> String {
    reader.join().unwrap_or_default()
}

/// `docker run -d --label LABEL -p 127.0.0.1::80 busybox sleep 3600`: a
/// container that publishes one port; returns its full id.
pub fn run_container(label: &str) -> Result<String> {
    let out = docker(&[
        "run",
        "-d",
        "--label",
        label,
        "-p",
        "127.0.0.1::80",
        IMAGE,
        "sleep",
        "3600",
    ])?;
    let id = out.lines().last().unwrap_or_default().to_string();
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("docker run printed {out:?}, not a container id");
    }
    Ok(id)
}

pub fn remove_container(id: &str) -> Result<()> {
    docker(&["rm", "-f", id]).map(drop)
}

/// Every container (running or not) that carries `label`.
pub fn labelled(label: &str) -> Result<Vec<String>> {
    let filter = format!("label={label}");
    let listed = docker(&["ps", "-aq", "--no-trunc", "--filter", &filter])?;
    Ok(listed.lines().map(str::to_string).collect())
}

// ------------------------------------------------------------- the events

/// One engine event: the engine's own time (`timeNano`) and when this
/// process received it, both in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct EngineEvent {
    pub time_ns: i128,
    pub received_ns: i128,
}

/// The first `start` and the first `die` of one container.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineTimes {
    pub start: Option<EngineEvent>,
    pub die: Option<EngineEvent>,
}

/// An event handed on to another consumer as soon as it is received.
pub struct Forwarded {
    pub id: String,
    pub action: String,
}

#[derive(Default)]
struct Received {
    times: HashMap<String, EngineTimes>,
    forward: Option<Sender<Forwarded>>,
}

/// The engine's event stream (`GET /events`) for one label, read in the
/// background from its own connection to the socket.
pub struct EventReader {
    stream: UnixStream,
    received: Arc<Mutex<Received>>,
}

impl EventReader {
    /// Subscribes from `since_secs` (Unix seconds), so that nothing that
    /// happens while the subscription is set up is missed.
    pub fn start(label: &str, since_secs: u64) -> Result<EventReader> {
        let filters = serde_json::json!({
            "type": ["container"],
            "label": [label],
            "event": ["start", "die"],
        });
        let path = format!(
            "/events?since={since_secs}&filters={}",
            percent_encode(&filters.to_string())
        );
        let stream = UnixStream::connect(SOCKET).with_context(|| format!("connect {SOCKET}"))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let request = format!("GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n");
        (&stream).write_all(request.as_bytes())?;
        let head = read_head(&mut reader)?;
        if head.status != 200 || !head.chunked {
            bail!(
                "GET /events: HTTP {}, chunked: {}",
                head.status,
                head.chunked
            );
        }
        let received = Arc::new(Mutex::new(Received::default()));
        let sink = received.clone();
        thread::spawn(move || read_events(reader, &sink));
        Ok(EventReader { stream, received })
    }

    pub fn times(&self, id: &str) -> EngineTimes {
        let received = self.received.lock().unwrap();
        received.times.get(id).copied().unwrap_or_default()
    }

    /// From now on, every event received is also sent to `to`, until
    /// `stop_forwarding`.
    pub fn forward_to(&self, to: Sender<Forwarded>) {
        self.received.lock().unwrap().forward = Some(to);
    }

    /// Drops the forwarding sender: the receiver sees the channel close.
    pub fn stop_forwarding(&self) {
        self.received.lock().unwrap().forward = None;
    }
}

impl Drop for EventReader {
    fn drop(&mut self) {
        // Ends the reading thread.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Records every event of the stream; each chunk is timestamped on receipt.
fn read_events(mut reader: impl BufRead, received: &Mutex<Received>) {
    let mut pending = Vec::new();
    while let Ok(Some(chunk)) = read_chunk(&mut reader) {
        let received_ns = now_ns();
        pending.extend(chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Some((id, action, time_ns)) = parse_event(&line) else {
                continue;
            };
            let event = EngineEvent {
                time_ns,
                received_ns,
            };
            record_event(&mut received.lock().unwrap(), id, action, event);
        }
    }
}

fn record_event(received: &mut Received, id: String, action: String, event: EngineEvent) {
    let times = received.times.entry(id.clone()).or_default();
    match action.as_str() {
        "start" => times.start = times.start.or(Some(event)),
        "die" => times.die = times.die.or(Some(event)),
        _ => {}
    }
    if let Some(forward) = &received.forward {
        let _ = forward.send(Forwarded { id, action });
    }
}

/// (container id, action, timeNano) of one event.
fn parse_event(json: &[u8]) -> Option<(String, String, i128)> {
    let event: serde_json::Value = serde_json::from_slice(json).ok()?;
    let id = event["Actor"]["ID"].as_str().or(event["id"].as_str())?;
    let action = event["Action"].as_str().or(event["status"].as_str())?;
    let time_ns = event["timeNano"].as_i64()?;
    Some((id.to_string(), action.to_string(), i128::from(time_ns)))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ------------------------------------------------------- the Engine API

/// One keep-alive HTTP/1.1 connection to the engine's unix socket.
pub struct Engine {
    stream: BufReader<UnixStream>,
}

impl Engine {
    pub fn connect() -> Result<Engine> {
        let stream = UnixStream::connect(SOCKET).with_context(|| format!("connect {SOCKET}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Engine {
            stream: BufReader::new(stream),
        })
    }

    /// `GET path`; the body of a `200` answer.
    pub fn get(&mut self, path: &str) -> Result<Vec<u8>> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes())?;
        let (status, body) = read_response(&mut self.stream)?;
        if status != 200 {
            bail!(
                "GET {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(body)
    }

    /// Fails unless the engine answers `GET /info`, the first request a
    /// deadlocked engine leaves unanswered.
    pub fn check_answers(&mut self) -> Result<()> {
        self.get("/info")
            .map(drop)
            .with_context(|| format!("the engine does not answer GET /info; {HUNG}"))
    }

    /// The engine's version, e.g. `20.10.24+dfsg1 (API 1.41)`.
    pub fn version(&mut self) -> Result<String> {
        let body: serde_json::Value = serde_json::from_slice(&self.get("/version")?)?;
        Ok(format!(
            "{} (API {})",
            body["Version"].as_str().unwrap_or("?"),
            body["ApiVersion"].as_str().unwrap_or("?")
        ))
    }

    /// `GET /containers/<id>/json`.
    pub fn inspect(&mut self, id: &str) -> Result<serde_json::Value> {
        let body = self.get(&format!("/containers/{id}/json"))?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// `count` sequential inspects of one container, each timed.
    pub fn time_inspects(&mut self, id: &str, count: usize) -> Result<Vec<Duration>> {
        (0..count)
            .map(|_| {
                let started = Instant::now();
                self.inspect(id)?;
                Ok(started.elapsed())
            })
            .collect()
    }
}

/// Status line and the headers that say how the body is framed.
struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
}

/// Status and body of one response; `Content-Length` or chunked bodies.
fn read_response(r: &mut impl BufRead) -> Result<(u16, Vec<u8>)> {
    let head = read_head(r)?;
    let body = if head.chunked {
        let mut body = Vec::new();
        while let Some(chunk) = read_chunk(r)? {
            body.extend(chunk);
        }
        body
    } else {
        read_exact(r, head.length.unwrap_or(0))?
    };
    Ok((head.status, body))
}

fn read_head(r: &mut impl BufRead) -> Result<Head> {
    let status_line = read_line(r)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP status line {status_line:?}"))?;
    let mut head = Head {
        status,
        length: None,
        chunked: false,
    };
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.length = Some(value.parse()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
}

/// The next chunk of a chunked body; `None` after the last one.
fn read_chunk(r: &mut impl BufRead) -> Result<Option<Vec<u8>>> {
    let size_line = read_line(r)?;
    let size_hex = size_line.split(';').next().unwrap_or_default().trim();
    let size = usize::from_str_radix(size_hex, 16)
        .with_context(|| format!("bad chunk size {size_line:?}"))?;
    if size == 0 {
        // Trailers, then the empty line that ends the body.
        while !read_line(r)?.is_empty() {}
        return Ok(None);
    }
    let chunk = read_exact(r, size)?;
    read_line(r)?;
    Ok(Some(chunk))
}

fn read_exact(r: &mut impl BufRead, size: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; size];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// One line without its `\r\n`; an error at end of stream.
fn read_line(r: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        bail!("the engine closed the connection");
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
