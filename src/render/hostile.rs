//! The trust boundary as a property (docs/security.md "Trust boundary"): whatever a
//! container's owner gives the agent (labels, image reference, port
//! bindings, any text) and whatever someone writes under the root in etcd,
//! the shipped templates print only lines of the shapes they print for an
//! ordinary cluster. A line's shape is the line with every run of name
//! characters made `X`: an injected newline, brace, semicolon, blank or
//! comment gives a shape no ordinary cluster gives. Fewer cases go on to
//! the real `haproxy -c` and `nginx -t` (Debian's, as the tests install).
//! Records are read as `render` reads them, through `follow`, from the
//! simulator's cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;

use super::template::SHIPPED;
use super::{Catalog, Template};
use crate::container::{Container, PortBinding, SERVICE_LABEL};
use crate::informer::{self, Source};
use crate::listing::{Filter, Index};
use crate::record::{desired_record, HostPrefix};
use crate::sim::cluster::{Actor, Cluster, Write};
use crate::sim::records::SimRecords;

const ROOT: &str = "/registered/";

/// The shipped templates, as `render` loads them.
fn templates() -> Vec<(&'static str, Template)> {
    SHIPPED
        .iter()
        .map(|&(name, source)| {
            let template = Template::from_source(Path::new(name), source.to_owned())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, template)
        })
        .collect()
}

/// `line` with every run of name and address characters as `X`.
fn shape(line: &str) -> String {
    let mut shape = String::new();
    let mut in_name = false;
    for c in line.chars() {
        let name_char = c.is_ascii_alphanumeric() || "._:@-[]_".contains(c);
        if name_char && !in_name {
            shape.push('X');
        } else if !name_char {
            shape.push(c);
        }
        in_name = name_char;
    }
    shape
}

fn shapes(text: &str) -> BTreeSet<String> {
    text.lines().map(shape).collect()
}

/// The index of `records` (key, value) as `list` and `render` read it:
/// written to the simulated cluster, read through the informer in pages.
fn index(records: &[(String, Vec<u8>)]) -> Index {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cluster = Cluster::new();
        for (key, value) in records {
            let write = Write::Put(key.clone(), value.clone());
            cluster.txn(Actor::Foreign, &[write], 0, None).unwrap();
        }
        let filter = Filter::default();
        let source = Source {
            root: ROOT,
            prefix: ROOT,
            filter: &filter,
        };
        let mut records = SimRecords::new(cluster, 0);
        informer::read(&mut records, &source).await.unwrap().index
    })
}

/// An ordinary cluster: two hosts, IPv4 and IPv6 backends, a service with
/// no backend left, an image from a registry with a port.
fn ordinary_shapes() -> BTreeMap<&'static str, BTreeSet<String>> {
    let record = |host: &str, service: &str, image: &str, id: char, ip: &str, ports: &str| {
        let id = id.to_string().repeat(64);
        let bindings: Vec<String> = ports
            .split(',')
            .map(|pair| {
                let (public, private) = pair.split_once('>').unwrap();
                format!(
                    r#"{{"container":"{id}","image":"{image}","ip":"{ip}","public_port":"{public}","private_port":"{private}","port_type":"tcp"}}"#
                )
            })
            .collect();
        (
            format!("{ROOT}{host}/{service}/{id}"),
            format!("[{}]", bindings.join(",")).into_bytes(),
        )
    };
    let first = [
        record("10.0.0.1", "web", "web:1", 'a', "10.0.0.1", "32768>80"),
        record("10.0.0.2", "gone", "gone:1", 'b', "10.0.0.2", "9000>9000"),
    ];
    let then = [
        record("10.0.0.1", "web", "web:1", 'a', "10.0.0.1", "32768>80"),
        record(
            "fd00::2",
            "web",
            "web:2",
            'c',
            "fd00::2",
            "32769>80,32770>443",
        ),
        record(
            "10.0.0.2",
            "quay.io::a::b:v1",
            "quay.io:5000::a::b:v1",
            'd',
            "10.0.0.2",
            "8080>8080",
        ),
    ];
    let mut catalog = Catalog::default();
    catalog.context(index(&first).rows());
    let context = catalog.context(index(&then).rows());
    templates()
        .into_iter()
        .map(|(name, template)| (name, shapes(&template.render(context.clone()).unwrap())))
        .collect()
}

/// Any text, weighted towards what breaks configurations.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "[a-z0-9]{1,8}[\n;{}# \"'\\\\$\u{1b}][a-z0-9 ]{0,16}",
        "(80|8080|0|65536|-1| 80|80\n)",
        "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|::|::ffff:127\\.0\\.0\\.1|10\\.0\\.0\\.9|fd00::9|1\\.2\\.3\\.4:80 weight 9)",
        "(tcp|udp|sctp|tcp\n|TCP)",
    ]
}

fn hostile_binding() -> impl Strategy<Value = PortBinding> {
    (
        hostile_text(),
        hostile_text(),
        hostile_text(),
        hostile_text(),
    )
        .prop_map(|(private_port, protocol, host_ip, host_port)| PortBinding {
            private_port,
            protocol,
            host_ip,
            host_port,
        })
}

fn hostile_container() -> impl Strategy<Value = Container> {
    (
        proptest::option::of(hostile_text()),
        prop_oneof![hostile_text(), "[a-z]{1,6}(:[a-z0-9]{1,4})?"],
        proptest::collection::vec(hostile_binding(), 0..4),
        proptest::bool::ANY,
    )
        .prop_map(|(label, configured_image, mut bindings, add_good)| {
            if add_good {
                bindings.push(PortBinding {
                    private_port: "80".into(),
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                    host_port: "32768".into(),
                });
            }
            Container {
                id: "e".repeat(64),
                configured_image,
                image_id: format!("sha256:{}", "f".repeat(64)),
                labels: label
                    .map(|l| BTreeMap::from([(SERVICE_LABEL.to_owned(), l)]))
                    .unwrap_or_default(),
                running: true,
                bindings,
                ..Container::default()
            }
        })
}

/// A record written by hand: any key under the root, any endpoint fields.
fn hostile_record() -> impl Strategy<Value = (String, Vec<u8>)> {
    (
        hostile_text(),
        hostile_text(),
        proptest::collection::vec(proptest::collection::vec(hostile_text(), 6), 1..3),
    )
        .prop_map(|(host, service, endpoints)| {
            let id = "d".repeat(64);
            let endpoints: Vec<serde_json::Value> = endpoints
                .into_iter()
                .map(|f| {
                    serde_json::json!({
                        "container": id, "image": f[0], "ip": f[1],
                        "public_port": f[2], "private_port": f[3], "port_type": f[4],
                        "extra": f[5],
                    })
                })
                .collect();
            (
                format!("{ROOT}{host}/{service}/{id}"),
                serde_json::to_vec(&endpoints).unwrap(),
            )
        })
}

/// The rendered files of hostile `containers` (registered by an agent on
/// `host`) and `written` records, with the shapes no ordinary cluster gives.
fn render_hostile(
    containers: &[Container],
    written: Vec<(String, Vec<u8>)>,
    host: &str,
) -> Vec<(&'static str, String, Vec<String>)> {
    let prefix = HostPrefix::new("/registered", host.parse().unwrap());
    let mut records: Vec<(String, Vec<u8>)> = containers
        .iter()
        .enumerate()
        .filter_map(|(n, c)| {
            let container = Container {
                id: format!("{n}").repeat(64),
                ..c.clone()
            };
            desired_record(&container, &prefix).map(|r| (r.key, r.value.into_bytes()))
        })
        .collect();
    records.extend(written);
    let context = Catalog::default().context(index(&records).rows());
    let ordinary = ordinary_shapes();
    templates()
        .into_iter()
        .map(|(name, template)| {
            let text = template.render(context.clone()).unwrap();
            let new = shapes(&text).difference(&ordinary[name]).cloned().collect();
            (name, text, new)
        })
        .collect()
}

/// Whether the load balancer `name` accepts `text` as its configuration.
/// Envoy and Traefik have no check of a dynamic file apart from running
/// (tests/proxies.rs does, with hostile records): they are held to the
/// shape property only.
fn accepted_by(name: &str, text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lb.conf");
    std::fs::write(&file, text).unwrap();
    let file = file.to_string_lossy().into_owned();
    let pid = format!("pid {}/nginx.pid;", dir.path().display());
    let args: Vec<&str> = match name {
        "haproxy" => vec!["-c", "-q", "-f", &file],
        _ => vec!["-t", "-q", "-c", &file, "-g", &pid],
    };
    let out = std::process::Command::new(name)
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("{name} (installed by scripts/setup.sh): {e}"));
    // haproxy calls a file without a frontend valid but refuses to start
    // on it (exit 2): a cluster with nothing registered, not an injection.
    let no_frontend = name == "haproxy" && !text.contains("\nlisten ");
    if out.status.success() || (no_frontend && out.status.code() == Some(2)) {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn host() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("10.0.0.1"), Just("127.0.0.1"), Just("fd00::1")]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_input_gives_a_line_of_a_new_shape(
        containers in proptest::collection::vec(hostile_container(), 0..4),
        written in proptest::collection::vec(hostile_record(), 0..4),
        host in host(),
    ) {
        for (name, text, new) in render_hostile(&containers, written, host) {
            prop_assert!(new.is_empty(), "{}: {:?}\n{}", name, new, text);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn haproxy_and_nginx_accept_whatever_is_rendered(
        containers in proptest::collection::vec(hostile_container(), 1..4),
        written in proptest::collection::vec(hostile_record(), 0..3),
        host in host(),
    ) {
        let checked = render_hostile(&containers, written, host)
            .into_iter()
            .filter(|(name, _, _)| ["haproxy", "nginx"].contains(name));
        for (name, text, _) in checked {
            let accepted = accepted_by(name, &text);
            prop_assert!(accepted.is_ok(), "{}: {:?}\n{}", name, accepted, text);
        }
    }
}
