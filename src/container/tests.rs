//! Unit tests of the container rules: signals, drains, labels, health.

use super::*;

#[test]
fn signals_by_name_or_number() {
    for text in ["SIGTERM", "TERM", "sigterm", " 15 "] {
        assert_eq!(parse_signal(text), Some(15), "{text:?}");
    }
    assert_eq!(parse_signal("SIGQUIT"), Some(3));
    assert_eq!(parse_signal("SIGWINCH"), Some(28));
    assert_eq!(parse_signal("SIGRTMIN+3"), None);
    assert_eq!(parse_signal("0"), None);
    assert_eq!(parse_signal(""), None);
}

#[test]
fn the_stop_signal_and_the_killing_ones_drain_the_others_do_not() {
    let default = Container::default();
    for signal in [15, 9, 2, 3] {
        assert!(default.drains_on(signal), "{signal}");
    }
    for signal in [1, 10, 12, 28] {
        assert!(!default.drains_on(signal), "{signal}");
    }
    let quits = Container {
        stop_signal: Some(3),
        ..Container::default()
    };
    assert!(quits.drains_on(3) && quits.drains_on(9));
    assert!(!quits.drains_on(15), "SIGTERM is not its stop signal");
    let usr1 = Container {
        stop_signal: Some(10),
        ..Container::default()
    };
    assert!(usr1.drains_on(10));
    assert_eq!(
        default.stop_timeout,
        StopTimeout::After(DEFAULT_STOP_TIMEOUT)
    );
}

#[test]
fn stop_timeouts_from_the_engine_are_any_number() {
    use std::time::Duration;
    assert_eq!(
        StopTimeout::from_engine_seconds(None),
        StopTimeout::default()
    );
    assert_eq!(
        StopTimeout::from_engine_seconds(Some(0)),
        StopTimeout::After(Duration::ZERO)
    );
    assert_eq!(
        StopTimeout::from_engine_seconds(Some(i64::MAX)),
        StopTimeout::After(Duration::from_secs(i64::MAX as u64))
    );
    for forever in [-1, i64::MIN] {
        assert_eq!(
            StopTimeout::from_engine_seconds(Some(forever)),
            StopTimeout::Never
        );
    }
}

fn labelled(pairs: &[(&str, &str)]) -> Container {
    Container {
        running: true,
        labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Container::default()
    }
}

fn require(texts: &[&str]) -> Vec<LabelRequirement> {
    texts
        .iter()
        .map(|t| LabelRequirement::parse(t).unwrap())
        .collect()
}

#[test]
fn parses_key_and_key_value() {
    assert_eq!(
        LabelRequirement::parse("svc"),
        Some(LabelRequirement {
            key: "svc".into(),
            value: None
        })
    );
    assert_eq!(
        LabelRequirement::parse("svc=web=1"),
        Some(LabelRequirement {
            key: "svc".into(),
            value: Some("web=1".into())
        })
    );
    assert_eq!(
        LabelRequirement::parse("svc="),
        Some(LabelRequirement {
            key: "svc".into(),
            value: Some(String::new())
        })
    );
    assert_eq!(LabelRequirement::parse(""), None);
    assert_eq!(LabelRequirement::parse("=x"), None);
}

fn labels_only(texts: &[&str]) -> Selection {
    Selection {
        required_labels: require(texts),
        require_healthy: false,
        ..Selection::default()
    }
}

fn healthy_only() -> Selection {
    Selection {
        required_labels: Vec::new(),
        require_healthy: true,
        ..Selection::default()
    }
}

fn with_health(health: Health) -> Container {
    Container {
        health,
        ..labelled(&[])
    }
}

#[test]
fn no_requirement_admits_every_running_container() {
    assert_eq!(
        labelled(&[]).verdict(&Selection::default()),
        Verdict::Selected
    );
}

#[test]
fn stopped_containers_never_qualify() {
    let stopped = Container {
        running: false,
        ..labelled(&[("a", "1")])
    };
    assert_eq!(stopped.verdict(&labels_only(&["a"])), Verdict::NotSelected);
    assert_eq!(stopped.verdict(&Selection::default()), Verdict::NotSelected);
    assert_eq!(stopped.verdict(&healthy_only()), Verdict::NotSelected);
}

#[test]
fn paused_containers_never_qualify() {
    // Docker reports a paused container as running *and* paused.
    let paused = Container {
        paused: true,
        ..labelled(&[("a", "1")])
    };
    assert_eq!(paused.verdict(&Selection::default()), Verdict::NotSelected);
    assert_eq!(paused.verdict(&labels_only(&["a"])), Verdict::NotSelected);
    let healthy_but_paused = Container {
        health: Health::Healthy,
        ..paused
    };
    assert_eq!(
        healthy_but_paused.verdict(&healthy_only()),
        Verdict::NotSelected
    );
}

#[test]
fn every_requirement_must_hold() {
    let c = labelled(&[("a", "1"), ("b", "2")]);
    assert_eq!(c.verdict(&labels_only(&["a"])), Verdict::Selected);
    assert_eq!(c.verdict(&labels_only(&["a=1", "b"])), Verdict::Selected);
    assert_eq!(c.verdict(&labels_only(&["a=2"])), Verdict::NotSelected);
    assert_eq!(c.verdict(&labels_only(&["a", "c"])), Verdict::NotSelected);
}

#[test]
fn the_ignore_label_opts_out_whatever_else_applies() {
    for value in ["true", "TRUE", "1", "yes", " True "] {
        let c = labelled(&[("a", "1"), (IGNORE_LABEL, value)]);
        assert_eq!(
            c.verdict(&Selection::default()),
            Verdict::NotSelected,
            "{value:?}"
        );
        assert_eq!(
            c.verdict(&labels_only(&["a=1"])),
            Verdict::NotSelected,
            "{value:?}"
        );
        assert_eq!(
            c.verdict(&healthy_only()),
            Verdict::NotSelected,
            "{value:?}"
        );
    }
    for value in ["false", "0", "", "no"] {
        let c = labelled(&[(IGNORE_LABEL, value)]);
        assert_eq!(
            c.verdict(&Selection::default()),
            Verdict::Selected,
            "{value:?}"
        );
    }
}

#[test]
fn without_require_healthy_health_does_not_matter() {
    for health in [
        Health::NoCheck,
        Health::Starting,
        Health::Healthy,
        Health::Unhealthy,
    ] {
        assert_eq!(
            with_health(health).verdict(&Selection::default()),
            Verdict::Selected,
            "{health:?}"
        );
    }
}

#[test]
fn require_healthy_holds_back_starting_and_unhealthy_containers() {
    let rules = healthy_only();
    assert_eq!(
        with_health(Health::NoCheck).verdict(&rules),
        Verdict::Selected
    );
    assert_eq!(
        with_health(Health::Healthy).verdict(&rules),
        Verdict::Selected
    );
    assert_eq!(
        with_health(Health::Starting).verdict(&rules),
        Verdict::Withheld(Withheld::Starting)
    );
    assert_eq!(
        with_health(Health::Unhealthy).verdict(&rules),
        Verdict::Withheld(Withheld::Unhealthy)
    );
}

#[test]
fn label_rules_come_before_health() {
    let c = Container {
        health: Health::Unhealthy,
        ..labelled(&[("a", "1")])
    };
    let rules = Selection {
        required_labels: require(&["a=2"]),
        require_healthy: true,
        ..Selection::default()
    };
    assert_eq!(c.verdict(&rules), Verdict::NotSelected);
}

#[test]
fn docker_health_statuses() {
    assert_eq!(Health::from_docker(""), Health::NoCheck);
    assert_eq!(Health::from_docker("none"), Health::NoCheck);
    assert_eq!(Health::from_docker("starting"), Health::Starting);
    assert_eq!(Health::from_docker("healthy"), Health::Healthy);
    assert_eq!(Health::from_docker("unhealthy"), Health::Unhealthy);
    assert_eq!(Health::from_docker("something new"), Health::Starting);
}
