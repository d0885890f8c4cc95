//! Unit tests of `list`'s rows, filters, table and JSON.

use super::*;

const A: &str = "aaaaaaaaaaaa0000000000000000000000000000000000000000000000000000";
const B: &str = "bbbbbbbbbbbb0000000000000000000000000000000000000000000000000000";

fn value(container: &str, image: &str, bindings: &[(&str, &str, &str, &str)]) -> String {
    let objects: Vec<String> = bindings
        .iter()
        .map(|(ip, public, private, proto)| {
            format!(
                r#"{{"container":"{container}","image":"{image}","ip":"{ip}","public_port":"{public}","private_port":"{private}","port_type":"{proto}"}}"#
            )
        })
        .collect();
    format!("[{}]", objects.join(","))
}

fn store() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            format!("/registered/10.0.0.2/nginx:1.25/{B}"),
            value(B, "nginx:1.25", &[("10.0.0.2", "8080", "80", "tcp")]).into_bytes(),
        ),
        (
            format!("/registered/10.0.0.1/busybox:latest/{A}"),
            value(
                A,
                "busybox:latest",
                &[
                    ("10.0.0.1", "32768", "80", "tcp"),
                    ("10.0.0.1", "32769", "53", "udp"),
                ],
            )
            .into_bytes(),
        ),
        ("/registered/10.0.0.1/stray".into(), b"x".to_vec()),
        (
            format!("/registered/10.0.0.3/busybox:latest/{A}"),
            b"not json".to_vec(),
        ),
    ]
}

/// The rows and unreadable keys of an index of `records`; the index is
/// leaked so that the rows, which borrow from it, can be returned.
fn rows_of<'a>(
    records: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    filter: &Filter,
) -> (Vec<Row<'static>>, Unreadables) {
    let mut index = Index::new("/registered/", filter.clone());
    for (key, value) in records {
        index.put(key, value);
    }
    let index: &'static Index = Box::leak(Box::new(index));
    (index.rows().collect(), index.unreadables())
}

fn listed(filter: &Filter) -> (Vec<Row<'static>>, Unreadables) {
    let store = store();
    rows_of(
        store.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        filter,
    )
}

#[test]
fn one_row_per_binding_sorted_by_host_and_unreadable_keys_named() {
    let (rows, unreadable) = listed(&Filter::default());
    let summary: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.host.to_string(),
                r.image.to_string(),
                r.public_port.to_string(),
                r.ip.to_string(),
            ]
        })
        .collect();
    assert_eq!(
        summary,
        [
            ["10.0.0.1", "busybox:latest", "32768", "10.0.0.1"],
            ["10.0.0.1", "busybox:latest", "32769", "10.0.0.1"],
            ["10.0.0.2", "nginx:1.25", "8080", "10.0.0.2"],
        ]
    );
    assert_eq!(rows[0].container.as_str(), A);
    assert_eq!(rows[1].port_type, Protocol::Udp);
    assert_eq!(rows[2].key, format!("/registered/10.0.0.2/nginx:1.25/{B}"));
    assert_eq!(unreadable.count, 2);
    let keys: Vec<&str> = unreadable.named.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "/registered/10.0.0.1/stray".to_string(),
            format!("/registered/10.0.0.3/busybox:latest/{A}")
        ]
    );
}

#[test]
fn filters_by_host_and_image() {
    let by_host = Filter {
        host: Some("10.0.0.2".parse().unwrap()),
        image: None,
        services: Vec::new(),
    };
    let (rows, unreadable) = listed(&by_host);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].host.to_string(), "10.0.0.2");
    assert_eq!(unreadable.count, 0, "other hosts' keys are not looked at");

    let by_image = Filter {
        host: None,
        image: Some("docker.io/library/busybox".into()),
        services: Vec::new(),
    };
    let (rows, _) = listed(&by_image);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.image.as_str() == "busybox:latest"));

    let both = Filter {
        host: Some("10.0.0.2".parse().unwrap()),
        image: Some("busybox".into()),
        services: Vec::new(),
    };
    assert!(listed(&both).0.is_empty());
}

#[test]
fn a_host_ip_that_extends_another_is_not_that_host() {
    let store = [(
        format!("/registered/10.0.0.10/busybox:latest/{A}"),
        value(A, "busybox:latest", &[("10.0.0.10", "1", "2", "tcp")]),
    )];
    let filter = Filter {
        host: Some("10.0.0.1".parse().unwrap()),
        image: None,
        services: Vec::new(),
    };
    let (rows, _) = rows_of(
        store.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
        &filter,
    );
    assert!(rows.is_empty());
}

#[test]
fn only_the_first_keys_that_are_no_records_are_named() {
    let junk: Vec<String> = (0..25)
        .map(|i| format!("/registered/h/junk{i:02}"))
        .collect();
    let (rows, unreadable) = rows_of(
        junk.iter().map(|k| (k.as_str(), b"x".as_slice())),
        &Filter::default(),
    );
    assert!(rows.is_empty());
    assert_eq!(unreadable.count, 25);
    let named: Vec<&str> = unreadable.named.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(named, junk[..NAMED_UNREADABLE]);
}

#[test]
fn rows_sort_by_segment_where_key_order_differs() {
    let [short, long] = ["app:1", "app:1.2"].map(|image| {
        (
            format!("/registered/10.0.0.9/{image}/{A}"),
            value(A, image, &[("10.0.0.9", "1", "2", "tcp")]),
        )
    });
    // etcd's order: `app:1.2/` before `app:1/`.
    let store = [&long, &short];
    let (rows, _) = rows_of(
        store.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
        &Filter::default(),
    );
    let images: Vec<&str> = rows.iter().map(|r| r.image.as_str()).collect();
    assert_eq!(images, ["app:1", "app:1.2"]);
}

#[test]
fn table_is_aligned_with_short_ids_and_arrows() {
    let (rows, _) = listed(&Filter::default());
    let text = table(rows);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "HOST      SERVICE         IMAGE           CONTAINER     IP        PORT",
            "10.0.0.1  busybox:latest  busybox:latest  aaaaaaaaaaaa  10.0.0.1  32768 -> 80/tcp",
            "10.0.0.1  busybox:latest  busybox:latest  aaaaaaaaaaaa  10.0.0.1  32769 -> 53/udp",
            "10.0.0.2  nginx:1.25      nginx:1.25      bbbbbbbbbbbb  10.0.0.2  8080 -> 80/tcp",
        ]
    );
    assert_eq!(
        table([]),
        "HOST  SERVICE  IMAGE  CONTAINER  IP  PORT\n(none)\n"
    );
}

#[test]
fn json_is_one_line_with_every_field() {
    let (rows, _) = listed(&Filter {
        host: Some("10.0.0.2".parse().unwrap()),
        ..Filter::default()
    });
    assert_eq!(
        json(rows),
        format!(
            r#"[{{"host":"10.0.0.2","service":"nginx:1.25","image":"nginx:1.25","container":"{B}","ip":"10.0.0.2","public_port":"8080","private_port":"80","port_type":"tcp","key":"/registered/10.0.0.2/nginx:1.25/{B}"}}]"#
        ) + "\n"
    );
    assert_eq!(json([]), "[]\n");
}

#[test]
fn records_an_agent_never_writes_are_not_rows() {
    let good = value(A, "web", &[("10.0.0.1", "8080", "80", "tcp")]);
    let hostile = [
        (
            format!("/registered/10.0.0.1/web\nserver evil/{A}"),
            good.clone(),
        ),
        (format!("/registered/not-an-ip/web/{A}"), good.clone()),
        (
            "/registered/10.0.0.1/web/not-an-id".to_owned(),
            good.clone(),
        ),
        (
            format!("/registered/10.0.0.1/web/{A}"),
            value(B, "web", &[("10.0.0.1", "8080", "80", "tcp")]),
        ),
        (
            format!("/registered/10.0.0.1/web/{A}"),
            value(A, "web;", &[("10.0.0.1", "8080", "80", "tcp")]),
        ),
        (
            format!("/registered/10.0.0.1/web/{A}"),
            value(
                A,
                "web",
                &[("203.0.113.66:80 weight 256", "8080", "80", "tcp")],
            ),
        ),
        (
            format!("/registered/10.0.0.1/web/{A}"),
            value(A, "web", &[("10.0.0.1", "8080;", "80", "tcp")]),
        ),
        (
            format!("/registered/10.0.0.1/web/{A}"),
            value(A, "web", &[("10.0.0.1", "8080", "0", "tcp")]),
        ),
        (
            format!("/registered/10.0.0.1/web/{A}"),
            value(A, "web", &[("10.0.0.1", "8080", "80", "tcp\n")]),
        ),
        (
            format!("/registered/10.0.0.1/web/{A}"),
            value(
                A,
                "web",
                &[("10.0.0.1", "1", "80", "tcp"), ("x", "2", "80", "tcp")],
            ),
        ),
        (
            format!("/registered/10.0.0.1/web/{A}"),
            value(A, "web", &[("127.0.0.1", "2379", "80", "tcp")]),
        ),
        (
            format!("/registered/10.0.0.1/web/{A}"),
            value(A, "web", &[("::ffff:127.0.0.1", "2379", "80", "tcp")]),
        ),
        (
            format!("/registered/10.0.0.1/web/{A}"),
            value(A, "web", &[("0.0.0.0", "8080", "80", "tcp")]),
        ),
    ];
    for (key, value) in &hostile {
        let (rows, unreadable) = rows_of([(key.as_str(), value.as_bytes())], &Filter::default());
        assert!(rows.is_empty(), "{key} {value}: {rows:?}");
        assert_eq!(unreadable.count, 1, "{key} {value}");
    }
    let key = format!("/registered/10.0.0.1/web/{A}");
    let (rows, unreadable) = rows_of([(key.as_str(), good.as_bytes())], &Filter::default());
    assert_eq!((rows.len(), unreadable.count), (1, 0));
    let loopback_host = format!("/registered/127.0.0.1/web/{A}");
    let on_loopback = value(A, "web", &[("127.0.0.1", "2379", "80", "tcp")]);
    let (rows, _) = rows_of(
        [(loopback_host.as_str(), on_loopback.as_bytes())],
        &Filter::default(),
    );
    assert_eq!(rows.len(), 1, "a loopback host's loopback binding is a row");
}

#[test]
fn any_of_several_services() {
    let filter = Filter {
        services: vec!["nginx:1.25".into(), " busybox:latest ".into()],
        ..Filter::default()
    };
    assert_eq!(listed(&filter).0.len(), 3);
    let filter = Filter {
        services: vec!["nginx:1.25".into()],
        ..Filter::default()
    };
    assert!(listed(&filter)
        .0
        .iter()
        .all(|r| r.service.as_str() == "nginx:1.25"));
}

#[test]
fn a_long_key_is_cut_in_the_log_and_says_how_long_it_was() {
    let long = format!("/registered/{}é", "k".repeat(1024 * 1024));
    let cut = shown(&long);
    let tail = format!("… ({} bytes)", long.len());
    assert!(cut.ends_with(&tail), "{}", &cut[cut.len() - 40..]);
    assert_eq!(cut.chars().count(), SHOWN_KEY_CHARS + tail.chars().count());
    assert_eq!(shown("/registered/short"), "/registered/short");
    // A cut never splits a character.
    let wide = "é".repeat(SHOWN_KEY_CHARS + 1);
    assert!(shown(&wide).starts_with(&"é".repeat(SHOWN_KEY_CHARS)));
}
