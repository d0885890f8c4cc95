use super::*;

fn host_port_of(pinned: &str) -> u16 {
    let ports = pinned.split('/').next().unwrap();
    let host = ports.rsplit(':').nth(1).unwrap();
    host.split('-').next().unwrap().parse().unwrap()
}

#[test]
fn ports_are_never_handed_out_twice_and_stay_in_the_tests_block() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..(2 * BLOCK_LEN + 7) {
        let port = next();
        assert!(TEST_PORTS.contains(&port), "{port}");
        assert!(seen.insert(port), "{port} twice");
    }
}

#[test]
fn a_run_of_ports_is_consecutive_and_unbound() {
    let first = next_run(5);
    for port in first..first + 5 {
        assert!(TEST_PORTS.contains(&port));
        assert!(is_unbound(port));
    }
}

#[test]
fn a_run_longer_than_a_sub_block_takes_neighbouring_ones() {
    let first = next_run(500);
    assert!(TEST_PORTS.contains(&first) && TEST_PORTS.contains(&(first + 499)));
    assert!((first..first + 500).all(is_unbound));
    let after = next();
    assert!(
        !(first..first + 500).contains(&after),
        "{after} handed out twice"
    );
}

#[test]
fn a_port_that_something_holds_is_skipped() {
    let held = TcpListener::bind(("127.0.0.1", next())).unwrap();
    let held_port = held.local_addr().unwrap().port();
    assert!(!is_unbound(held_port));
}

#[test]
fn specs_without_a_host_port_get_one_and_keep_the_rest() {
    for (spec, ip_and_colon, suffix) in [
        ("127.0.0.1::80", "127.0.0.1:", ":80"),
        ("80", "", ":80"),
        ("81/udp", "", ":81/udp"),
        ("127.0.0.1::53/udp", "127.0.0.1:", ":53/udp"),
        ("[::1]::80", "[::1]:", ":80"),
        ("0.0.0.0::90/tcp", "0.0.0.0:", ":90/tcp"),
    ] {
        let pinned = pin_spec(spec);
        let port = host_port_of(&pinned);
        assert!(TEST_PORTS.contains(&port), "{spec} → {pinned}");
        assert_eq!(pinned, format!("{ip_and_colon}{port}{suffix}"), "{spec}");
    }
}

#[test]
fn a_container_port_range_gets_a_host_range_of_its_length() {
    let pinned = pin_spec("127.0.0.1::9000-9004");
    let first = host_port_of(&pinned);
    assert_eq!(pinned, format!("127.0.0.1:{first}-{}:9000-9004", first + 4));
}

#[test]
fn specs_that_name_their_host_port_are_kept() {
    for spec in [
        "8080:80",
        "127.0.0.1:8080:80/udp",
        "[::1]:8080:80",
        "1-2:1-2",
    ] {
        assert_eq!(pin_spec(spec), spec);
    }
}

#[test]
fn only_publish_values_are_rewritten() {
    let pinned = pin_published(&[
        "--label",
        "a=b",
        "-p",
        "80",
        "--publish=81",
        "busybox",
        "mkdir",
        "-p",
        "/x",
    ]);
    assert_eq!(pinned[..3], ["--label", "a=b", "-p"]);
    assert!(pinned[3].ends_with(":80"), "{pinned:?}");
    assert!(
        pinned[4].starts_with("--publish=") && pinned[4].ends_with(":81"),
        "{pinned:?}"
    );
    assert_eq!(pinned[5..], ["busybox", "mkdir", "-p", "/x"]);
}

#[test]
#[should_panic(expected = "never with -P")]
fn publish_all_is_refused() {
    pin_published(&["-P", "busybox"]);
}

#[test]
fn kernel_lists_parse() {
    assert_eq!(parse_ranges("32768-60999"), vec![32768..=60999]);
    assert_eq!(
        parse_ranges("20000-32767,40000\n"),
        vec![20000..=32767, 40000..=40000]
    );
    assert_eq!(parse_ranges("\n"), Vec::<RangeInclusive<u16>>::new());
}
