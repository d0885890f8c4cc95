//! Unit tests of the record format and the key layout.

use super::*;

const ID: &str = "ddd2d3a0758780a8d7ea792c79379d44ede446805c0e79034bee3ad6999e0fa7";
const IMAGE_ID: &str = "sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741";

fn host() -> HostPrefix {
    HostPrefix::new("/registered", "10.100.100.100".parse().unwrap())
}

fn binding(private: &str, proto: &str, ip: &str, public: &str) -> PortBinding {
    PortBinding {
        private_port: private.into(),
        protocol: proto.into(),
        host_ip: ip.into(),
        host_port: public.into(),
    }
}

fn busybox(bindings: Vec<PortBinding>) -> Container {
    Container {
        id: ID.into(),
        configured_image: "busybox".into(),
        image_id: IMAGE_ID.into(),
        running: true,
        bindings,
        ..Container::default()
    }
}

#[test]
fn the_original_readme_record() {
    let record = desired_record(
        &busybox(vec![binding("80", "tcp", "10.100.100.100", "49153")]),
        &host(),
    )
    .unwrap();
    assert_eq!(
        record.key,
        format!("/registered/10.100.100.100/busybox:latest/{ID}")
    );
    assert_eq!(
        record.value,
        format!(
            r#"[{{"container":"{ID}","image":"busybox:latest","ip":"10.100.100.100","public_port":"49153","private_port":"80","port_type":"tcp"}}]"#
        )
    );
}

#[test]
fn wildcards_become_the_host_ip_and_collapse() {
    let record = desired_record(
        &busybox(vec![
            binding("80", "tcp", "0.0.0.0", "49153"),
            binding("80", "tcp", "::", "49153"),
            binding("80", "tcp", "", "49153"),
        ]),
        &host(),
    )
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&record.value).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 1);
    assert_eq!(value[0]["ip"], "10.100.100.100");
}

#[test]
fn order_is_by_private_port_protocol_ip_public_port_numerically() {
    let shuffled = vec![
        binding("9000", "tcp", "0.0.0.0", "1"),
        binding("80", "udp", "0.0.0.0", "5"),
        binding("80", "tcp", "10.0.0.3", "10"),
        binding("80", "tcp", "10.0.0.3", "9"),
        binding("80", "tcp", "10.0.0.2", "7"),
        binding("443", "tcp", "0.0.0.0", "3"),
    ];
    let mut reversed = shuffled.clone();
    reversed.reverse();
    let a = desired_record(&busybox(shuffled), &host()).unwrap();
    let b = desired_record(&busybox(reversed), &host()).unwrap();
    assert_eq!(a, b);
    let value: serde_json::Value = serde_json::from_str(&a.value).unwrap();
    let order: Vec<(String, String, String, String)> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap().to_string();
            (
                field("private_port"),
                field("port_type"),
                field("ip"),
                field("public_port"),
            )
        })
        .collect();
    let expected = [
        ("80", "tcp", "10.0.0.2", "7"),
        ("80", "tcp", "10.0.0.3", "9"),
        ("80", "tcp", "10.0.0.3", "10"),
        ("80", "udp", "10.100.100.100", "5"),
        ("443", "tcp", "10.100.100.100", "3"),
        ("9000", "tcp", "10.100.100.100", "1"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(order, expected);
}

#[test]
fn nothing_published_means_no_record() {
    assert_eq!(desired_record(&busybox(vec![]), &host()), None);
    // Exposed but not published: Docker reports the port without a host port.
    assert_eq!(
        desired_record(&busybox(vec![binding("80", "tcp", "", "")]), &host()),
        None
    );
}

#[test]
fn host_prefix_is_normalised_and_never_matches_a_longer_ip() {
    let ip = "10.0.0.1".parse().unwrap();
    for root in ["/registered", "registered", "/registered/", "registered//"] {
        assert_eq!(HostPrefix::new(root, ip).as_str(), "/registered/10.0.0.1/");
    }
    assert_eq!(HostPrefix::new("/", ip).as_str(), "/10.0.0.1/");
    assert_eq!(HostPrefix::new("/a/b", ip).as_str(), "/a/b/10.0.0.1/");
    let ours = HostPrefix::new("/registered", ip);
    assert!(ours.contains("/registered/10.0.0.1/busybox:latest/x"));
    assert!(!ours.contains("/registered/10.0.0.10/busybox:latest/x"));
}

#[test]
fn ipv6_host_ip_in_key_and_value() {
    let prefix = HostPrefix::new("/registered", "fd00::1".parse().unwrap());
    let record = desired_record(&busybox(vec![binding("80", "tcp", "::", "1")]), &prefix).unwrap();
    assert!(record
        .key
        .starts_with("/registered/fd00::1/busybox:latest/"));
    assert!(record.value.contains(r#""ip":"fd00::1""#));
}

#[test]
fn desired_applies_the_selection_before_the_record() {
    use crate::container::{Health, IGNORE_LABEL};
    let published = vec![binding("80", "tcp", "", "49153")];
    let healthy_only = Selection {
        require_healthy: true,
        ..Selection::default()
    };
    let plain = busybox(published.clone());
    let record = desired_record(&plain, &host()).unwrap();
    assert_eq!(
        desired(&plain, &Selection::default(), &host()),
        Desired::Registered(record.clone())
    );
    assert_eq!(
        desired(&plain, &healthy_only, &host()),
        Desired::Registered(record.clone()),
        "no HEALTHCHECK: registered as before"
    );

    let starting = Container {
        health: Health::Starting,
        ..busybox(published.clone())
    };
    assert_eq!(
        desired(&starting, &healthy_only, &host()),
        Desired::Withheld(Withheld::Starting)
    );
    assert_eq!(
        desired(&starting, &Selection::default(), &host()),
        Desired::Registered(record.clone())
    );
    let unhealthy = Container {
        health: Health::Unhealthy,
        ..busybox(published.clone())
    };
    assert_eq!(
        desired(&unhealthy, &healthy_only, &host()),
        Desired::Withheld(Withheld::Unhealthy)
    );
    let healthy = Container {
        health: Health::Healthy,
        ..busybox(published.clone())
    };
    assert_eq!(
        desired(&healthy, &healthy_only, &host()),
        Desired::Registered(record)
    );

    // Nothing published: nothing withheld either.
    let unpublished = Container {
        health: Health::Unhealthy,
        ..busybox(Vec::new())
    };
    assert_eq!(
        desired(&unpublished, &healthy_only, &host()),
        Desired::Nothing
    );

    let ignored = Container {
        labels: [(IGNORE_LABEL.to_string(), "true".to_string())].into(),
        ..busybox(published)
    };
    assert_eq!(
        desired(&ignored, &Selection::default(), &host()),
        Desired::Nothing
    );
}

#[test]
fn the_service_label_names_the_key_and_the_value_keeps_the_image() {
    use crate::container::SERVICE_LABEL;
    let labelled = |name: &str| Container {
        labels: [(SERVICE_LABEL.to_string(), name.to_string())].into(),
        ..busybox(vec![binding("80", "tcp", "", "49153")])
    };
    let record = desired_record(&labelled(" web/frontend "), &host()).unwrap();
    let key = RecordKey::parse("/registered/", &record.key).unwrap();
    assert_eq!(key.service, "web::frontend", "trimmed, / as ::");
    let endpoints = Endpoint::decode(record.value.as_bytes()).unwrap();
    assert_eq!(endpoints[0].image, "busybox:latest");

    for blank in ["", "  "] {
        let record = desired_record(&labelled(blank), &host()).unwrap();
        let key = RecordKey::parse("/registered/", &record.key).unwrap();
        assert_eq!(key.service, "busybox:latest", "blank {blank:?}: the image");
    }
    let unlabelled = desired_record(&busybox(vec![binding("80", "tcp", "", "1")]), &host());
    assert!(unlabelled.unwrap().key.contains("/busybox:latest/"));
}

#[test]
fn a_key_parses_into_its_segments_and_prints_back() {
    let key = format!("/registered/10.0.0.5/busybox:latest/{ID}");
    let parsed = RecordKey::parse("/registered/", &key).unwrap();
    assert_eq!(
        (parsed.host, parsed.service, parsed.container),
        ("10.0.0.5", "busybox:latest", ID)
    );
    assert_eq!(parsed.to_string(), key);
}

#[test]
fn only_three_non_empty_segments_below_the_root_are_a_key() {
    for key in [
        "/registered/10.0.0.5/busybox:latest",
        "/registered/10.0.0.5/busybox:latest/id/more",
        "/registered/10.0.0.5//id",
        "/other/10.0.0.5/busybox:latest/id",
    ] {
        assert_eq!(RecordKey::parse("/registered/", key), None, "{key}");
    }
}

#[test]
fn the_host_of_any_key_is_its_first_segment_below_the_root() {
    for (key, host) in [
        ("/registered/10.0.0.5/busybox:latest/id", "10.0.0.5"),
        ("/registered/10.0.0.5/busybox:latest/id/more", "10.0.0.5"),
        ("/registered/10.0.0.5", "10.0.0.5"),
        ("/registered//x", ""),
        // Not under the root: what precedes its first `/`, which no host
        // filter admits.
        ("/other/10.0.0.5/x/y", ""),
    ] {
        assert_eq!(RecordKey::host_of("/registered/", key), host, "{key}");
    }
}

#[test]
fn a_host_parses_only_its_own_record_keys() {
    let host = host();
    let key = format!("/registered/10.100.100.100/busybox:latest/{ID}");
    assert_eq!(host.parse(&key).map(|k| k.container), Some(ID));
    let longer = format!("/registered/10.100.100.1000/busybox:latest/{ID}");
    assert_eq!(host.parse(&longer), None);
    assert_eq!(host.parse("/registered/10.100.100.100/junk"), None);
}

#[test]
fn the_agent_writes_keys_in_the_one_layout() {
    let record =
        desired_record(&busybox(vec![binding("80", "tcp", "", "32768")]), &host()).unwrap();
    let key = RecordKey::parse("/registered/", &record.key).unwrap();
    assert_eq!(
        (key.host, key.service, key.container),
        ("10.100.100.100", "busybox:latest", ID)
    );
}

#[test]
fn endpoints_encode_to_the_exact_wire_bytes_and_decode_back() {
    let endpoint = Endpoint {
        container: "c".into(),
        image: "quay.io::coreos::etcd:v3.5".into(),
        ip: "10.0.0.5".into(),
        public_port: "49153".into(),
        private_port: "80".into(),
        port_type: "tcp".into(),
    };
    let value = Endpoint::encode(std::slice::from_ref(&endpoint));
    assert_eq!(
        value,
        r#"[{"container":"c","image":"quay.io::coreos::etcd:v3.5","ip":"10.0.0.5","public_port":"49153","private_port":"80","port_type":"tcp"}]"#
    );
    assert_eq!(Endpoint::decode(value.as_bytes()).unwrap(), vec![endpoint]);
    let escaped = br#"[{"container":"a\"b","image":"i","ip":"1","public_port":"2","private_port":"3","port_type":"tcp"}]"#;
    assert_eq!(Endpoint::decode(escaped).unwrap()[0].container, "a\"b");
}

#[test]
fn a_service_label_outside_the_grammar_falls_back_to_the_image_and_is_reported() {
    use crate::container::SERVICE_LABEL;
    let injected = "web\n    server evil 203.0.113.66:80 weight 256 #";
    let container = Container {
        labels: [(SERVICE_LABEL.to_string(), injected.to_string())].into(),
        ..busybox(vec![binding("80", "tcp", "", "49153")])
    };
    let record = desired_record(&container, &host()).unwrap();
    let key = RecordKey::parse("/registered/", &record.key).unwrap();
    assert_eq!(key.service, "busybox:latest");
    let rejections = rejections(&container, &host(), &Selection::default());
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert_eq!(rejections[0].field, "service_label");
    assert!(!rejections[0].value.contains('\n'), "{:?}", rejections[0]);
    assert!(
        rejections[0].reason.contains("'\\n'"),
        "{:?}",
        rejections[0]
    );
}

#[test]
fn loopback_bindings_are_offered_only_by_a_loopback_host() {
    let bindings = vec![
        binding("80", "tcp", "127.0.0.1", "2379"),
        binding("81", "tcp", "::1", "2380"),
        binding("82", "tcp", "0.0.0.0", "8082"),
        binding("83", "tcp", "::ffff:127.0.0.1", "2381"),
        binding("84", "tcp", "224.0.0.1", "2382"),
    ];
    let record = desired_record(&busybox(bindings.clone()), &host()).unwrap();
    let endpoints = Endpoint::decode(record.value.as_bytes()).unwrap();
    let ports: Vec<&str> = endpoints.iter().map(|e| &*e.private_port).collect();
    assert_eq!(ports, ["82"], "only the wildcard binding");
    assert!(rejections(&busybox(bindings.clone()), &host(), &Selection::default()).is_empty());

    let only_loopback = busybox(bindings[..1].to_vec());
    assert_eq!(desired_record(&only_loopback, &host()), None);

    let loopback_host = HostPrefix::new("/registered", "127.0.0.1".parse().unwrap());
    let record = desired_record(&busybox(bindings), &loopback_host).unwrap();
    let endpoints = Endpoint::decode(record.value.as_bytes()).unwrap();
    let ips: Vec<&str> = endpoints.iter().map(|e| &*e.ip).collect();
    // One address, one spelling: the IPv4-mapped form is written as IPv4.
    assert_eq!(ips, ["127.0.0.1", "::1", "127.0.0.1", "127.0.0.1"]);
}

#[test]
fn offerable_addresses() {
    let routable: IpAddr = "192.0.2.1".parse().unwrap();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    for (ip, from_routable, from_loopback) in [
        ("192.0.2.7", true, true),
        ("fd00::7", true, true),
        ("127.0.0.2", false, true),
        ("::1", false, true),
        ("::ffff:127.0.0.1", false, true),
        ("0.0.0.0", false, false),
        ("::", false, false),
        ("::ffff:0.0.0.0", false, false),
        ("239.1.1.1", false, false),
        ("ff02::1", false, false),
        ("255.255.255.255", false, false),
        ("169.254.169.254", false, false),
        ("::ffff:169.254.169.254", false, false),
        ("fe80::1", false, false),
        ("febf::1", false, false),
        ("fec0::1", true, true),
        ("::127.0.0.1", false, false),
        ("::10.0.0.1", false, false),
        ("::1:0:0:1", true, true),
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(
            offerable(ip, routable),
            from_routable,
            "{ip} via {routable}"
        );
        assert_eq!(
            offerable(ip, loopback),
            from_loopback,
            "{ip} via {loopback}"
        );
    }
}

#[test]
fn bindings_that_are_no_port_bindings_are_skipped_and_reported() {
    let bad = [
        binding("80", "tcp", "0.0.0.0", "99999"),
        binding("80", "tcp", "0.0.0.0", "80\nx"),
        binding("0", "tcp", "0.0.0.0", "1"),
        binding("80", "icmp", "0.0.0.0", "1"),
        binding("80", "tcp", "evil\n", "1"),
    ];
    let mut bindings = bad.to_vec();
    bindings.push(binding("443", "tcp", "", "8443"));
    let container = busybox(bindings);
    let record = desired_record(&container, &host()).unwrap();
    let endpoints = Endpoint::decode(record.value.as_bytes()).unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].public_port, "8443");
    let rejections = rejections(&container, &host(), &Selection::default());
    assert_eq!(rejections.len(), bad.len(), "{rejections:?}");
    assert!(rejections
        .iter()
        .all(|r| r.field == "port" && !r.value.contains('\n')));
}

#[test]
fn a_record_over_the_limit_is_not_written_and_is_reported() {
    let bindings: Vec<PortBinding> = (1..=5000)
        .map(|port: u32| binding(&port.to_string(), "tcp", "", &(port + 10000).to_string()))
        .collect();
    let container = busybox(bindings);
    assert_eq!(desired_record(&container, &host()), None);
    let rejections = rejections(&container, &host(), &Selection::default());
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert_eq!(rejections[0].field, "ports");
    assert_eq!(rejections[0].value, "\"5000\"");

    let fits: Vec<PortBinding> = (1..=1000)
        .map(|port: u32| binding(&port.to_string(), "tcp", "", &(port + 10000).to_string()))
        .collect();
    assert!(desired_record(&busybox(fits), &host()).is_some());
}

#[test]
fn an_image_outside_the_grammar_gets_no_record() {
    let container = Container {
        configured_image: "busybox\nserver evil".into(),
        image_id: "not an id".into(),
        ..busybox(vec![binding("80", "tcp", "", "1")])
    };
    assert_eq!(desired_record(&container, &host()), None);
    let rejections = rejections(&container, &host(), &Selection::default());
    assert_eq!(rejections[0].field, "image", "{rejections:?}");
}
