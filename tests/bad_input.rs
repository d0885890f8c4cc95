//! Unusual but valid input from Docker: a container publishing a 500-port
//! range gets one record with 500 objects in numeric order; odd image
//! references (a registry with a port and a deep path with dots, dashes and
//! underscores in the tag, an uppercase tag, `sha256:<full id>`, a 12-hex
//! short id) give the right key and value; and the agent keeps registering
//! containers started afterwards.

mod common;

use std::collections::BTreeMap;

use common::*;

const RANGE: u16 = 500;

fn loopback_80(id: &str, image: &str) -> String {
    let public = host_port(id, "80/tcp", "127.0.0.1");
    expected_value(id, image, &[("127.0.0.1", &public, "80", "tcp")])
}

#[test]
fn five_hundred_port_range_is_one_sorted_record() {
    let env = TestEnv::new("bad_input_range");
    let _agent = env.start_agent(&[]);
    // The rig's own ports, like every published port of the suite.
    let base = rig::ports::next_run(RANGE);
    let last = base + RANGE - 1;
    let spec = format!("127.0.0.1:{base}-{last}:{base}-{last}");
    let id = env
        .containers
        .run(&["-p", &spec, "busybox", "sleep", "1000"]);

    let ports: Vec<String> = (base..=last).map(|p| p.to_string()).collect();
    let bindings: Vec<(&str, &str, &str, &str)> = ports
        .iter()
        .map(|p| ("127.0.0.1", p.as_str(), p.as_str(), "tcp"))
        .collect();
    let value = expected_value(&id, IMAGE, &bindings);
    let mut expected = BTreeMap::from([(env.key(IMAGE, &id), value.clone())]);
    assert_eq!(
        env.expected_now(),
        expected,
        "Docker disagrees on the range"
    );
    env.wait_records(SLOW, &expected);
    let parsed: serde_json::Value =
        serde_json::from_str(&env.records()[&env.key(IMAGE, &id)].value)
            .expect("the value is JSON");
    assert_eq!(parsed.as_array().map(Vec::len), Some(usize::from(RANGE)));

    // Another container afterwards is still registered.
    let next = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    expected.insert(env.key(IMAGE, &next), loopback_80(&next, IMAGE));
    env.wait_records(REACT, &expected);

    // And the big one goes away cleanly.
    env.containers.rm_f(&id);
    expected.remove(&env.key(IMAGE, &id));
    env.wait_records(REACT, &expected);
}

#[test]
fn odd_image_references_give_the_right_keys() {
    require_docker();
    let pid = std::process::id();
    let deep = format!("localhost:5000/a/b/c-{pid}:tag_with.dots-and-dashes");
    let upper = format!("busybox:V1.0-RC_2-p{pid}");
    // Declared before the environment, so the containers go first on drop.
    let _tags = TagGuard::tag(&[deep.clone(), upper.clone()]);
    let env = TestEnv::new("bad_input_images");
    let _agent = env.start_agent(&[]);

    let full = image_id(IMAGE);
    let short = full
        .strip_prefix("sha256:")
        .expect("sha256 image id")
        .get(..12)
        .unwrap()
        .to_string();
    let deep_key = format!("localhost:5000::a::b::c-{pid}:tag_with.dots-and-dashes");
    let upper_docker_io = format!("docker.io/library/{upper}");
    let cases: Vec<(&str, &str)> = vec![
        (&deep, &deep_key),
        (&upper, &upper),
        (&upper_docker_io, &upper),
        (&full, &full),
        (&short, &full),
    ];
    let mut expected = BTreeMap::new();
    for (reference, image) in &cases {
        let id = env
            .containers
            .run(&["-p", "127.0.0.1::80", reference, "sleep", "1000"]);
        expected.insert(env.key(image, &id), loopback_80(&id, image));
    }
    env.wait_records(REACT, &expected);

    // The agent keeps going with ordinary containers.
    let plain = env
        .containers
        .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    expected.insert(env.key(IMAGE, &plain), loopback_80(&plain, IMAGE));
    env.wait_records(REACT, &expected);
    drop(env);
}
