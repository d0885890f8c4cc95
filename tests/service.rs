//! Service names: the label `docker-etcd-register.service=NAME` replaces the
//! image in the key, so that two versions of an image during a rolling
//! upgrade are one service; each record still names its real image, and
//! `list` shows and filters both.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

const SERVICE_LABEL: &str = "docker-etcd-register.service";

#[test]
fn two_versions_of_an_image_are_one_service() {
    let env = TestEnv::new("service_label");
    let repository = format!("det-{}", env.id);
    let (old, new) = (format!("{repository}:1.25"), format!("{repository}:1.27"));
    let _tags = TagGuard::tag(&[old.clone(), new.clone()]);
    let service = format!("web/{}", env.id);
    let segment = service.replace('/', "::");
    let _agent = env.start_agent(&[]);

    let label = format!("{SERVICE_LABEL}={service}");
    let run = |image: &str| {
        let args = ["-l", &label, "-p", "127.0.0.1::80", image, "sleep", "1000"];
        env.containers.run(&args)
    };
    let (first, second) = (run(&old), run(&new));
    let blank = format!("{SERVICE_LABEL}= ");
    let unnamed =
        env.containers
            .run(&["-l", &blank, "-p", "127.0.0.1::80", IMAGE, "sleep", "1000"]);
    let record = |id: &str, image: &str| {
        let port = host_port(id, "80/tcp", "127.0.0.1");
        expected_value(id, image, &[("127.0.0.1", &port, "80", "tcp")])
    };
    env.wait_records(
        REACT,
        &BTreeMap::from([
            (env.key(&segment, &first), record(&first, &old)),
            (env.key(&segment, &second), record(&second, &new)),
            (env.key(IMAGE, &unnamed), record(&unnamed, IMAGE)),
        ]),
    );

    let out = list(
        &env.endpoint(),
        &["--json", "--host", &env.host_ip, "--service", &service],
    );
    let rows: Value = serde_json::from_slice(&out.stdout).expect("list --json prints JSON");
    let seen: Vec<(&str, &str, &str)> = rows
        .as_array()
        .expect("an array")
        .iter()
        .map(|row| {
            let field = |name: &str| row[name].as_str().unwrap_or_default();
            (field("service"), field("image"), field("container"))
        })
        .collect();
    let mut expected = vec![
        (segment.as_str(), old.as_str(), first.as_str()),
        (segment.as_str(), new.as_str(), second.as_str()),
    ];
    expected.sort_by_key(|(_, _, container)| *container);
    assert_eq!(seen, expected, "list --service shows both versions");

    let out = list(&env.endpoint(), &["--host", &env.host_ip, "--image", &new]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 2, "header and one row:\n{table}");
    assert!(table.contains(&segment) && table.contains(&new), "{table}");
}
