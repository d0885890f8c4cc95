//! Configuration errors: a missing or malformed host IP, a bad etcd endpoint
//! and bad numbers, given as flags or environment variables, end the agent at
//! once with exit code 2 and a stderr line naming the flag and its variable —
//! without needing Docker or etcd.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_until, AGENT_BIN, AGENT_ENV};

/// Runs the agent with a configuration that is valid except for what `args`
/// and `envs` break, and asserts a configuration error naming `flag` and `var`.
fn assert_config_error(args: &[&str], envs: &[(&str, &str)], flag: &str, var: &str) {
    let mut cmd = Command::new(AGENT_BIN);
    for key in AGENT_ENV {
        cmd.env_remove(key);
    }
    // Neither Docker nor etcd is reachable here.
    cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn agent");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut status = None;
    wait_until(Duration::from_secs(5), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let elapsed = started.elapsed();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = reader.join().unwrap();
    let what = format!("args {args:?} env {envs:?}; stderr:\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("agent still running after 5 s: {what}"));
    assert_eq!(status.code(), Some(2), "exit code ({status}) for {what}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}: {what}");
    assert!(!stderr.trim().is_empty(), "empty stderr for {what}");
    assert!(
        stderr.lines().any(|l| l.contains(flag) && l.contains(var)),
        "no stderr line names both {flag} and {var}: {what}"
    );
}

const EP: [&str; 2] = ["--etcd-endpoints", "http://127.0.0.1:1"];
const IP: [&str; 2] = ["--host-ip", "127.0.0.1"];

#[test]
fn missing_host_ip() {
    assert_config_error(&EP, &[], "--host-ip", "HOST_IP");
    assert_config_error(
        &[],
        &[("ETCD_ENDPOINT", "127.0.0.1:1")],
        "--host-ip",
        "HOST_IP",
    );
}

#[test]
fn malformed_host_ip() {
    let args = [&EP[..], &["--host-ip", "not-an-ip"]].concat();
    assert_config_error(&args, &[], "--host-ip", "HOST_IP");
    assert_config_error(&EP, &[("HOST_IP", "not-an-ip")], "--host-ip", "HOST_IP");
    assert_config_error(&EP, &[("HOST_IP", "10.0.0.300")], "--host-ip", "HOST_IP");
}

#[test]
fn malformed_etcd_endpoint() {
    for bad in [
        "http://",
        "ftp://x:1",
        "host:notaport",
        "http://127.0.0.1:2379,ftp://x:1",
    ] {
        let args = [&IP[..], &["--etcd-endpoints", bad]].concat();
        assert_config_error(&args, &[], "--etcd-endpoints", "ETCD_ENDPOINT");
    }
    assert_config_error(
        &IP,
        &[("ETCD_ENDPOINT", "host:notaport")],
        "--etcd-endpoints",
        "ETCD_ENDPOINT",
    );
}

#[test]
fn non_numeric_ttl() {
    let base = [&IP[..], &EP[..]].concat();
    let args = [&base[..], &["--ttl", "abc"]].concat();
    assert_config_error(&args, &[], "--ttl", "REGISTER_TTL");
    assert_config_error(&base, &[("REGISTER_TTL", "abc")], "--ttl", "REGISTER_TTL");
    assert_config_error(&base, &[("REGISTER_TTL", "-1")], "--ttl", "REGISTER_TTL");
}

#[test]
fn non_numeric_resync() {
    let base = [&IP[..], &EP[..]].concat();
    let args = [&base[..], &["--resync", "abc"]].concat();
    assert_config_error(&args, &[], "--resync", "REGISTER_RESYNC");
    assert_config_error(
        &base,
        &[("REGISTER_RESYNC", "abc")],
        "--resync",
        "REGISTER_RESYNC",
    );
}
