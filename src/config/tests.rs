//! Unit tests of the whole configuration, through clap as a user types it.

use super::*;

fn config(args: &[&str]) -> Result<Config, ConfigError> {
    let argv = std::iter::once("docker-etcd-register").chain(args.iter().copied());
    Cli::try_parse_from(argv)
        .expect("clap accepts")
        .into_config()
}

fn problem_of(args: &[&str]) -> String {
    config(args).expect_err("must be rejected").to_string()
}

#[test]
fn defaults_with_only_a_host_ip() {
    let c = config(&["--host-ip", "10.0.0.5"]).unwrap();
    assert_eq!(c.host.as_str(), "/registered/10.0.0.5/");
    assert_eq!(c.etcd_endpoints, vec!["http://127.0.0.1:2379"]);
    assert_eq!(c.lease_ttl, Some(Duration::from_secs(30)));
    assert_eq!(c.resync, Some(Duration::from_secs(300)));
    assert_eq!(c.docker_host, "unix:///var/run/docker.sock");
    assert!(c.selection.required_labels.is_empty());
    assert!(
        !c.selection.require_healthy,
        "the original registered every container"
    );
}

#[test]
fn a_host_ip_has_one_spelling() {
    for (given, prefix) in [
        ("::ffff:10.0.0.5", "/registered/10.0.0.5/"),
        ("FD00:0::5", "/registered/fd00::5/"),
        ("127.0.0.1", "/registered/127.0.0.1/"),
    ] {
        assert_eq!(config(&["--host-ip", given]).unwrap().host.as_str(), prefix);
    }
}

#[test]
fn require_healthy_is_a_switch() {
    let c = config(&["--host-ip", "10.0.0.5", "--require-healthy"]).unwrap();
    assert!(c.selection.require_healthy);
}

#[test]
fn original_host_port_endpoints_get_http() {
    let c = config(&[
        "--host-ip",
        "10.0.0.5",
        "--etcd-endpoints",
        "10.0.0.1:4001, http://[::1]:2379,etcd.local",
    ])
    .unwrap();
    assert_eq!(
        c.etcd_endpoints,
        vec![
            "http://10.0.0.1:4001",
            "http://[::1]:2379",
            "http://etcd.local:2379"
        ]
    );
}

#[test]
fn zero_disables_lease_and_resync() {
    let c = config(&["--host-ip", "10.0.0.5", "--ttl", "0", "--resync", "0"]).unwrap();
    assert_eq!(c.lease_ttl, None);
    assert_eq!(c.resync, None);
}

#[test]
fn labels_are_parsed() {
    let c = config(&[
        "--host-ip",
        "10.0.0.5",
        "--require-label",
        "a=1,b",
        "--require-label",
        "c",
    ])
    .unwrap();
    let keys: Vec<_> = c
        .selection
        .required_labels
        .iter()
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(keys, ["a", "b", "c"]);
}

#[test]
fn every_error_names_flag_and_variable() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&[], "--host-ip", "HOST_IP"),
        (&["--host-ip", "not-an-ip"], "--host-ip", "HOST_IP"),
        (&["--host-ip", "0.0.0.0"], "--host-ip", "HOST_IP"),
        (&["--host-ip", "::ffff:0.0.0.0"], "--host-ip", "HOST_IP"),
        (&["--host-ip", "169.254.1.1"], "--host-ip", "HOST_IP"),
        (&["--host-ip", "fe80::1"], "--host-ip", "HOST_IP"),
        (&["--host-ip", "224.0.0.1"], "--host-ip", "HOST_IP"),
        (&["--host-ip", "255.255.255.255"], "--host-ip", "HOST_IP"),
        (
            &["--host-ip", "10.0.0.5", "--etcd-endpoints", "http://"],
            "--etcd-endpoints",
            "ETCD_ENDPOINT",
        ),
        (
            &["--host-ip", "10.0.0.5", "--etcd-endpoints", "ftp://x:1"],
            "--etcd-endpoints",
            "ETCD_ENDPOINT",
        ),
        (
            &["--host-ip", "10.0.0.5", "--etcd-endpoints", "host:notaport"],
            "--etcd-endpoints",
            "ETCD_ENDPOINT",
        ),
        (
            &["--host-ip", "10.0.0.5", "--etcd-endpoints", "host:70000"],
            "--etcd-endpoints",
            "ETCD_ENDPOINT",
        ),
        (
            &["--host-ip", "10.0.0.5", "--etcd-endpoints", ","],
            "--etcd-endpoints",
            "ETCD_ENDPOINT",
        ),
        (
            &["--host-ip", "10.0.0.5", "--ttl", "abc"],
            "--ttl",
            "REGISTER_TTL",
        ),
        (
            &["--host-ip", "10.0.0.5", "--ttl", "-1"],
            "--ttl",
            "REGISTER_TTL",
        ),
        (
            &["--host-ip", "10.0.0.5", "--resync", "1.5"],
            "--resync",
            "REGISTER_RESYNC",
        ),
        (
            &[
                "--host-ip",
                "10.0.0.5",
                "--docker-host",
                "/var/run/docker.sock",
            ],
            "--docker-host",
            "DOCKER_HOST",
        ),
        (
            &["--host-ip", "10.0.0.5", "--require-label", "=x"],
            "--require-label",
            "REGISTER_REQUIRE_LABELS",
        ),
    ];
    for (args, flag, env) in cases {
        let problem = problem_of(args);
        assert!(
            problem.contains(flag) && problem.contains(env),
            "{args:?}: {problem}"
        );
        assert!(!problem.contains('\n'), "{args:?}: {problem}");
    }
}

#[test]
fn ttl_is_at_most_etcds_maximum_lease_ttl() {
    let ttl = |value: &str| config(&["--host-ip", "10.0.0.5", "--ttl", value]);
    assert_eq!(ttl("0").unwrap().lease_ttl, None);
    assert_eq!(ttl("1").unwrap().lease_ttl, Some(Duration::from_secs(1)));
    assert_eq!(
        ttl("9000000000").unwrap().lease_ttl,
        Some(Duration::from_secs(9_000_000_000))
    );
    for too_long in [
        "9000000001",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999",
    ] {
        let problem = ttl(too_long).unwrap_err().to_string();
        assert!(
            problem.contains("--ttl")
                && problem.contains("REGISTER_TTL")
                && problem.contains("9000000000")
                && problem.contains("maximum"),
            "{too_long}: {problem}"
        );
    }
}

#[test]
fn resync_is_at_most_one_year() {
    let resync = |value: &str| config(&["--host-ip", "10.0.0.5", "--resync", value]);
    assert_eq!(resync("0").unwrap().resync, None);
    assert_eq!(resync("1").unwrap().resync, Some(Duration::from_secs(1)));
    assert_eq!(
        resync("31536000").unwrap().resync,
        Some(Duration::from_secs(31_536_000))
    );
    for too_long in ["31536001", "18446744073709551615", "18446744073709551616"] {
        let problem = resync(too_long).unwrap_err().to_string();
        assert!(
            problem.contains("--resync")
                && problem.contains("REGISTER_RESYNC")
                && problem.contains("31536000"),
            "{too_long}: {problem}"
        );
    }
}

#[test]
fn the_longest_periods_fit_in_the_clock() {
    // What the agent computes: the first resync, and a keep-alive every
    // third of the TTL.
    let now = tokio::time::Instant::now();
    assert!(now
        .checked_add(Duration::from_secs(MAX_RESYNC_SECS))
        .is_some());
    assert!(now
        .checked_add(Duration::from_secs(MAX_LEASE_TTL_SECS) / 3)
        .is_some());
}

#[test]
fn a_password_starting_with_a_dash_is_a_value() {
    let c = config(&[
        "--host-ip",
        "10.0.0.5",
        "--etcd-user",
        "agent",
        "--etcd-password",
        "-s3cr3t",
    ])
    .unwrap();
    let credentials = c.etcd_security.credentials.as_ref().unwrap();
    assert_eq!(credentials.password, "-s3cr3t");
}

#[test]
fn printing_the_config_shows_no_secret() {
    let pem = TempFile::new("debug", "-----BEGIN PRIVATE KEY-----\ns3cr3tkey\n");
    let cert = TempFile::new("debug-cert", "-----BEGIN CERTIFICATE-----\nabc\n");
    let c = config(&[
        "--host-ip",
        "10.0.0.5",
        "--etcd-user",
        "agent",
        "--etcd-password",
        "s3cr3t",
        "--etcd-endpoints",
        "127.0.0.1:2379",
        "--etcd-cacert",
        cert.path(),
        "--etcd-cert",
        cert.path(),
        "--etcd-key",
        pem.path(),
    ])
    .unwrap();
    let printed = format!("{c:?}");
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(
        printed.contains("agent"),
        "the user is no secret: {printed}"
    );
}

#[test]
fn empty_passwords_are_refused() {
    let problem = problem_of(&[
        "--host-ip",
        "10.0.0.5",
        "--etcd-user",
        "agent",
        "--etcd-password",
        "",
    ]);
    assert!(
        problem.contains("--etcd-password (env ETCD_PASSWORD)"),
        "{problem}"
    );
    let file = TempFile::new("empty-password", "\nsecond line\n");
    let problem = problem_of(&[
        "--host-ip",
        "10.0.0.5",
        "--etcd-user",
        "agent",
        "--etcd-password-file",
        file.path(),
    ]);
    assert!(problem.contains("ETCD_PASSWORD_FILE"), "{problem}");
    assert!(!problem.contains("second line"), "{problem}");
}

#[test]
fn files_that_are_not_pem_are_refused_without_echoing_them() {
    let garbage = TempFile::new("garbage", "s3cr3t garbage\n");
    let cert = TempFile::new("cert", "-----BEGIN CERTIFICATE-----\nabc\n");
    let key = TempFile::new("key", "-----BEGIN EC PRIVATE KEY-----\ns3cr3t\n");
    let tls = |cacert: &str, client_cert: &str, client_key: &str| {
        problem_of(&[
            "--host-ip",
            "10.0.0.5",
            "--etcd-cacert",
            cacert,
            "--etcd-cert",
            client_cert,
            "--etcd-key",
            client_key,
        ])
    };
    let cases = [
        (
            tls(garbage.path(), cert.path(), key.path()),
            "--etcd-cacert",
        ),
        (tls(cert.path(), garbage.path(), key.path()), "--etcd-cert"),
        (tls(cert.path(), cert.path(), garbage.path()), "--etcd-key"),
        // Certificate and key swapped.
        (tls(cert.path(), key.path(), cert.path()), "--etcd-cert"),
    ];
    for (problem, flag) in cases {
        assert!(problem.contains(flag), "{flag}: {problem}");
        assert!(!problem.contains("s3cr3t"), "{problem}");
    }
    assert!(config(&[
        "--host-ip",
        "10.0.0.5",
        "--etcd-endpoints",
        "127.0.0.1:2379",
        "--etcd-cacert",
        cert.path(),
        "--etcd-cert",
        cert.path(),
        "--etcd-key",
        key.path(),
    ])
    .is_ok());
}

#[test]
fn addresses_with_credentials_name_flag_and_variable_but_not_the_secret() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--etcd-endpoints", "http://user:s3cr3t@127.0.0.1:2379"],
            "--etcd-endpoints (env ETCD_ENDPOINT)",
        ),
        (
            &["--docker-host", "tcp://user:s3cr3t@127.0.0.1:2375"],
            "--docker-host (env DOCKER_HOST)",
        ),
    ];
    for (args, named) in cases {
        let problem = problem_of(&[&["--host-ip", "10.0.0.5"], *args].concat());
        assert!(problem.contains(named), "{problem}");
        assert!(problem.contains("***@127.0.0.1"), "{problem}");
        assert!(!problem.contains("s3cr3t"), "{problem}");
    }
}

#[test]
fn metrics_port_zero_is_refused() {
    let problem = problem_of(&["--host-ip", "10.0.0.5", "--metrics-addr", "127.0.0.1:0"]);
    assert!(
        problem.contains("--metrics-addr (env REGISTER_METRICS_ADDR)"),
        "{problem}"
    );
}

/// A file in the temporary directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "docker-etcd-register-config-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_address_mode_flags() {
    use crate::record::address::{AddressMode, NetworkChoice};
    let base = ["--host-ip", "10.0.0.5"];
    let mode = |more: &[&str]| {
        let args: Vec<&str> = base.iter().chain(more).copied().collect();
        config(&args).unwrap().selection.address_mode
    };
    assert_eq!(mode(&[]), AddressMode::Published);
    assert_eq!(
        mode(&["--address-mode", "network"]),
        AddressMode::Network(NetworkChoice::Only)
    );
    assert_eq!(
        mode(&["--address-mode", "network", "--network", "backend"]),
        AddressMode::Network(NetworkChoice::Named("backend".into()))
    );
    assert_eq!(
        mode(&["--address-mode", "network", "--network", "host"]),
        AddressMode::Network(NetworkChoice::Host)
    );
    let ip6 = |value: &str| {
        config(&["--host-ip", "10.0.0.5", "--host-ip6", value]).map(|c| c.selection.host_ip6)
    };
    assert_eq!(
        ip6("2001:DB8::5").unwrap(),
        Some("2001:db8::5".parse().unwrap())
    );
    assert_eq!(ip6("").unwrap(), None);
    // Loopback beside a loopback --host-ip (a test rig, one machine).
    let lo = config(&["--host-ip", "127.0.0.1", "--host-ip6", "::1"]).unwrap();
    assert_eq!(lo.selection.host_ip6, Some(std::net::Ipv6Addr::LOCALHOST));
    for refused in [
        "10.0.0.5",
        "::",
        "::ffff:10.0.0.5",
        "fe80::1",
        "ff02::1",
        "::1",
        "x",
    ] {
        let problem = ip6(refused).expect_err(refused).to_string();
        assert!(
            problem.contains("--host-ip6") && problem.contains("HOST_IP6"),
            "{problem}"
        );
    }
    for (args, flag) in [
        (&["--address-mode", "both"][..], "--address-mode"),
        (&["--network", "backend"][..], "--network"),
        (
            &["--address-mode", "network", "--network", "a/b"][..],
            "--network",
        ),
    ] {
        let all: Vec<&str> = base.iter().chain(args).copied().collect();
        assert!(
            problem_of(&all).contains(flag),
            "{args:?}: {}",
            problem_of(&all)
        );
    }
}
