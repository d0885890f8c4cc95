//! Configuration errors: a missing or malformed host IP, a bad etcd endpoint,
//! bad or absurd numbers and credentials typed into an address, given as
//! flags or environment variables, end the agent (or `list`) at once with
//! exit code 2 and a stderr line naming the flag and its variable — without
//! needing Docker or etcd, and without printing the secret anywhere. The
//! extreme values that are accepted work against the real etcd.

mod common;

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{lease_ttl, wait_until, TestEnv, AGENT_BIN, AGENT_ENV, REACT};

/// Runs the agent with a configuration that is valid except for what `args`
/// and `envs` break, and asserts a configuration error naming `flag` and `var`.
fn assert_config_error(args: &[&str], envs: &[(&str, &str)], flag: &str, var: &str) {
    assert_config_error_hiding(args, envs, flag, var, None);
}

/// Like [`assert_config_error`], and `secret` (when given) appears neither
/// on stdout nor on stderr.
fn assert_config_error_hiding(
    args: &[&str],
    envs: &[(&str, &str)],
    flag: &str,
    var: &str,
    secret: Option<&str>,
) {
    let (status, elapsed, stdout, stderr) = run_agent(args, envs);
    let what = format!("args {args:?} env {envs:?}; stderr:\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("agent still running after 5 s: {what}"));
    assert_eq!(status.code(), Some(2), "exit code ({status}) for {what}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}: {what}");
    assert!(!stderr.trim().is_empty(), "empty stderr for {what}");
    assert!(
        stderr.lines().any(|l| l.contains(flag) && l.contains(var)),
        "no stderr line names both {flag} and {var}: {what}"
    );
    if let Some(secret) = secret {
        assert!(!stderr.contains(secret), "stderr shows the secret: {what}");
        assert!(
            !stdout.contains(secret),
            "stdout shows the secret: {stdout}"
        );
    }
}

/// Runs the binary with nothing of the caller's environment and neither
/// Docker nor etcd reachable: exit status (`None` if still running after
/// 5 s, then killed), time taken, stdout and stderr.
fn run_agent(
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Option<ExitStatus>, Duration, String, String) {
    let mut cmd = Command::new(AGENT_BIN);
    for key in AGENT_ENV {
        cmd.env_remove(key);
    }
    cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn agent");
    let stdout = read_in_background(child.stdout.take().unwrap());
    let stderr = read_in_background(child.stderr.take().unwrap());
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
    (
        status,
        elapsed,
        stdout.join().unwrap(),
        stderr.join().unwrap(),
    )
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
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

#[test]
fn ttl_above_etcds_maximum_lease_ttl() {
    let base = [&IP[..], &EP[..]].concat();
    for too_long in [
        "9000000001",
        "18446744073709551615",
        "99999999999999999999999",
    ] {
        let args = [&base[..], &["--ttl", too_long]].concat();
        assert_config_error(&args, &[], "--ttl", "REGISTER_TTL");
        let env = [("REGISTER_TTL", too_long)];
        assert_config_error(&base, &env, "--ttl", "REGISTER_TTL");
    }
}

#[test]
fn resync_above_one_year() {
    let base = [&IP[..], &EP[..]].concat();
    for too_long in ["31536001", "18446744073709551615"] {
        let args = [&base[..], &["--resync", too_long]].concat();
        assert_config_error(&args, &[], "--resync", "REGISTER_RESYNC");
        let env = [("REGISTER_RESYNC", too_long)];
        assert_config_error(&base, &env, "--resync", "REGISTER_RESYNC");
    }
}

#[test]
fn metrics_port_zero() {
    let base = [&IP[..], &EP[..]].concat();
    let (flag, var) = ("--metrics-addr", "REGISTER_METRICS_ADDR");
    let args = [&base[..], &[flag, "127.0.0.1:0"]].concat();
    assert_config_error(&args, &[], flag, var);
    assert_config_error(&base, &[(var, "127.0.0.1:0")], flag, var);
}

#[test]
fn docker_host_with_a_bad_port() {
    let base = [&IP[..], &EP[..]].concat();
    let (flag, var) = ("--docker-host", "DOCKER_HOST");
    for bad in ["tcp://127.0.0.1:0", "tcp://127.0.0.1:99999"] {
        let args = [&base[..], &[flag, bad]].concat();
        assert_config_error(&args, &[], flag, var);
        assert_config_error(&base, &[(var, bad)], flag, var);
    }
}

const SECRET: &str = "pa55-s3cr3t";

#[test]
fn credentials_in_an_etcd_endpoint_are_never_printed() {
    let (flag, var) = ("--etcd-endpoints", "ETCD_ENDPOINT");
    let endpoints = [
        format!("http://agent:{SECRET}@127.0.0.1:2379"),
        format!("https://agent:{SECRET}@127.0.0.1:2379"),
        format!("agent:{SECRET}@127.0.0.1:2379"),
        // A comma in the password must not split it into two "endpoints".
        format!("http://agent:{SECRET},x@127.0.0.1:2379"),
        format!("http://127.0.0.1:2379,http://agent:{SECRET}@127.0.0.1:2380"),
    ];
    for endpoint in &endpoints {
        for command in [&IP[..], &["list"][..]] {
            let with_flag = [command, &[flag, endpoint]].concat();
            assert_config_error_hiding(&with_flag, &[], flag, var, Some(SECRET));
            let env = [(var, endpoint.as_str())];
            assert_config_error_hiding(command, &env, flag, var, Some(SECRET));
        }
    }
}

#[test]
fn the_credentials_error_says_where_they_belong() {
    let endpoint = format!("http://agent:{SECRET}@127.0.0.1:2379");
    let args = [&IP[..], &["--etcd-endpoints", &endpoint]].concat();
    let (_, _, _, stderr) = run_agent(&args, &[]);
    assert!(stderr.contains("http://***@127.0.0.1:2379"), "{stderr}");
    assert!(
        stderr.contains("--etcd-user") && stderr.contains("--etcd-password-file"),
        "{stderr}"
    );
}

#[test]
fn credentials_in_the_docker_host_are_never_printed() {
    let (flag, var) = ("--docker-host", "DOCKER_HOST");
    let base = [&IP[..], &EP[..]].concat();
    for host in [
        format!("tcp://agent:{SECRET}@127.0.0.1:2375"),
        format!("http://agent:{SECRET}@127.0.0.1"),
        format!("ftp://agent:{SECRET}@127.0.0.1"),
    ] {
        let args = [&base[..], &[flag, &host]].concat();
        assert_config_error_hiding(&args, &[], flag, var, Some(SECRET));
        assert_config_error_hiding(&base, &[(var, &host)], flag, var, Some(SECRET));
    }
}

#[test]
fn a_password_that_looks_like_a_flag_is_never_printed() {
    // Without a user the password is refused; clap must not have taken it
    // for an unknown flag and echoed it.
    let password = format!("-{SECRET}");
    for command in [&IP[..], &["list"][..]] {
        let args = [command, &EP[..], &["--etcd-password", &password]].concat();
        assert_config_error_hiding(&args, &[], "--etcd-user", "ETCD_USER", Some(SECRET));
        let env = [("ETCD_PASSWORD", password.as_str())];
        let args = [command, &EP[..]].concat();
        assert_config_error_hiding(&args, &env, "--etcd-user", "ETCD_USER", Some(SECRET));
    }
}

#[test]
fn help_shows_no_secret_from_the_environment() {
    let envs = [
        (
            "ETCD_ENDPOINT",
            format!("http://agent:{SECRET}@127.0.0.1:2379"),
        ),
        (
            "DOCKER_HOST",
            format!("tcp://agent:{SECRET}@127.0.0.1:2375"),
        ),
        ("ETCD_PASSWORD", SECRET.to_string()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for args in [&["--help"][..], &["list", "--help"][..]] {
        let (status, _, stdout, stderr) = run_agent(args, &envs);
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{args:?}: {stderr}");
        assert!(stdout.contains("ETCD_ENDPOINT"), "{args:?}: {stdout}");
        assert!(!stdout.contains(SECRET), "{args:?}: {stdout}");
        assert!(!stderr.contains(SECRET), "{args:?}: {stderr}");
    }
}

#[test]
fn the_longest_ttl_and_resync_are_accepted_by_etcd() {
    let env = TestEnv::new("config_longest");
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let mut agent = env.start_agent(&["--ttl", "9000000000", "--resync", "31536000"]);
    env.wait_records(REACT, &env.expected_now());
    let lease = env.records().into_values().next().unwrap().lease;
    let ttl = lease_ttl(&env.endpoint(), lease);
    assert!(ttl > 8_999_999_000, "etcd's TTL of the lease: {ttl}");
    agent.assert_running();
}

#[test]
fn a_one_second_ttl_is_raised_by_etcd_and_kept_alive() {
    let env = TestEnv::new("config_shortest");
    env.containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    let mut agent = env.start_agent(&["--ttl", "1"]);
    let expected = env.expected_now();
    env.wait_records(REACT, &expected);
    let lease = env.records().into_values().next().unwrap().lease;
    // etcd's minimum TTL with its default election timeout (1 s) is 2 s.
    let ttl = lease_ttl(&env.endpoint(), lease);
    assert!((1..=2).contains(&ttl), "etcd's TTL of the lease: {ttl}");
    // Several minimum TTLs later the record is still there, on the same lease.
    std::thread::sleep(Duration::from_secs(6));
    let records = env.records();
    assert_eq!(records.len(), expected.len(), "{records:?}");
    assert!(records.values().all(|r| r.lease == lease), "{records:?}");
    agent.assert_running();
}
