//! `Wanted`: what listings, changes and failed inspects make of the wish.

use std::collections::{BTreeMap, BTreeSet};

use super::Wanted;
use crate::container::Withheld;
use crate::plan::Observed;
use crate::record::{Desired, HostPrefix, Record};

fn host() -> HostPrefix {
    HostPrefix::new("/registered", "10.0.0.1".parse().unwrap())
}

fn key(id: &str) -> String {
    format!("/registered/10.0.0.1/web/{id}")
}

fn registered(id: &str, value: &str) -> Desired {
    Desired::Registered(Record {
        key: key(id),
        value: value.to_owned(),
    })
}

fn observed(entries: &[(&str, &str)]) -> BTreeMap<String, Observed> {
    entries
        .iter()
        .map(|(id, value)| {
            let observed = Observed {
                value: value.as_bytes().to_vec(),
                lease: 7,
            };
            (key(id), observed)
        })
        .collect()
}

fn ids(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

fn wish(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(id, value)| (key(id), (*value).to_owned()))
        .collect()
}

#[test]
fn before_the_first_listing_nothing_is_wanted_and_changes_are_ignored() {
    let mut wanted = Wanted::NotListed;
    wanted.changed("a", registered("a", "1"));
    wanted.inspect_failed("b".to_owned());
    assert!(!wanted.is_listed());
    assert_eq!(wanted.len(), 0);
    assert!(wanted
        .by_key(&host(), &observed(&[("b", "old")]))
        .is_empty());
}

#[test]
fn a_listing_replaces_everything() {
    let mut wanted = Wanted::NotListed;
    wanted.relisted([("a".to_owned(), registered("a", "1"))], BTreeSet::new());
    wanted.relisted(
        [
            ("b".to_owned(), registered("b", "2")),
            ("c".to_owned(), Desired::Withheld(Withheld::Starting)),
            ("d".to_owned(), Desired::Nothing),
        ],
        BTreeSet::new(),
    );
    assert!(wanted.is_listed());
    assert_eq!(
        wanted.by_key(&host(), &BTreeMap::new()),
        wish(&[("b", "2")])
    );
    assert_eq!(wanted.withheld().collect::<Vec<_>>(), [&Withheld::Starting]);
}

#[test]
fn a_listing_keeps_what_was_known_of_containers_it_could_not_inspect() {
    let mut wanted = Wanted::NotListed;
    wanted.relisted(
        [
            ("a".to_owned(), registered("a", "1")),
            ("h".to_owned(), Desired::Withheld(Withheld::Unhealthy)),
            ("gone".to_owned(), registered("gone", "3")),
        ],
        BTreeSet::new(),
    );
    wanted.relisted([], ids(&["a", "h"]));
    assert_eq!(
        wanted.by_key(&host(), &BTreeMap::new()),
        wish(&[("a", "1")])
    );
    assert_eq!(wanted.withheld().count(), 1);
}

#[test]
fn a_change_replaces_one_container_and_makes_it_known() {
    let mut wanted = Wanted::NotListed;
    wanted.relisted([("a".to_owned(), registered("a", "1"))], ids(&["u"]));
    wanted.changed("a", Desired::Withheld(Withheld::Unhealthy));
    wanted.changed("u", registered("u", "2"));
    assert_eq!(
        wanted.by_key(&host(), &observed(&[("u", "old")])),
        wish(&[("u", "2")])
    );
    assert_eq!(wanted.withheld().count(), 1);
    wanted.changed("a", Desired::Nothing);
    assert_eq!(wanted.withheld().count(), 0);
    assert_eq!(wanted.len(), 1);
}

#[test]
fn records_of_unknown_containers_stand_as_etcd_has_them() {
    let mut wanted = Wanted::NotListed;
    wanted.relisted([("a".to_owned(), registered("a", "1"))], BTreeSet::new());
    wanted.inspect_failed("u".to_owned());
    let in_etcd = observed(&[("a", "0"), ("u", "old"), ("gone", "x")]);
    assert_eq!(
        wanted.by_key(&host(), &in_etcd),
        wish(&[("a", "1"), ("u", "old")]),
        "ours wins, an unknown container's stands, a gone container's goes"
    );
    // A record that is not UTF-8 cannot be rewritten as it is; it is left to the plan.
    let mut binary = observed(&[]);
    let garbage = Observed {
        value: vec![0xff, 0xfe],
        lease: 7,
    };
    binary.insert(key("u"), garbage);
    assert!(!wanted.by_key(&host(), &binary).contains_key(&key("u")));
}

#[test]
fn the_records_of_some_containers() {
    let mut wanted = Wanted::NotListed;
    wanted.relisted(
        [
            ("a".to_owned(), registered("a", "1")),
            ("b".to_owned(), registered("b", "2")),
        ],
        BTreeSet::new(),
    );
    let in_etcd = observed(&[("a", "0"), ("c", "9"), ("b", "2")]);
    let (desired, observed_of) = wanted.of(&ids(&["a", "c"]), &host(), &in_etcd);
    assert_eq!(desired, wish(&[("a", "1")]));
    assert_eq!(
        observed_of.keys().cloned().collect::<Vec<_>>(),
        [key("a"), key("c")]
    );
}
