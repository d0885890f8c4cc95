//! From desired and observed records to the etcd operations that make them
//! equal (docs/behaviour.md: "How it behaves"). Pure: the reconciler's whole decision lives here.

use std::collections::{BTreeMap, BTreeSet};

use crate::record::{HostPrefix, StoredRecord};

/// The lease a record rides on; `0` is etcd's "no lease".
pub type LeaseId = i64;

/// What etcd holds (or is believed to hold) under one of our keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub value: Vec<u8>,
    pub lease: LeaseId,
}

/// One change to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Write `value` under `key` on the agent's current lease.
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
}

impl Operation {
    pub fn key(&self) -> &str {
        match self {
            Operation::Put { key, .. } | Operation::Delete { key } => key,
        }
    }

    /// Key and value bytes: what counts against etcd's request size limit.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Operation::Put { key, value } => key.len() + value.len(),
            Operation::Delete { key } => key.len(),
        }
    }
}

/// The operations that turn `observed` into `desired` with every record on
/// `lease` (`None`: whatever lease a record rides on, only values count).
///
/// A record that is already right is left alone; one with another value or
/// on another lease (say, of the agent's previous run) is rewritten in place,
/// never deleted first, so watchers see no flap. Puts come before deletes so
/// that a backend that moves to a new key is never absent in between.
pub fn plan(
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, Observed>,
    lease: Option<LeaseId>,
) -> Vec<Operation> {
    let puts = desired.iter().filter_map(|(key, value)| {
        let up_to_date = observed.get(key).is_some_and(|o| {
            lease.is_none_or(|lease| o.lease == lease) && o.value == value.as_bytes()
        });
        (!up_to_date).then(|| Operation::Put {
            key: key.clone(),
            value: value.clone(),
        })
    });
    let deletes = observed
        .keys()
        .filter(|key| !desired.contains_key(*key))
        .map(|key| Operation::Delete { key: key.clone() });
    puts.chain(deletes).collect()
}

/// The records as etcd holds them, as the desired state: what an agent that
/// took the host over from its previous run but has not listed its engine
/// yet keeps alive (moved onto its lease in place, nothing deleted). Only
/// the previous runs' records are kept, those on `previous_leases` that read
/// as this host's records: a record someone else wrote beside them (on
/// another lease, or junk) is not adopted onto our lease; it is dealt with
/// once the engine has been listed.
pub fn as_they_are(
    host: &HostPrefix,
    observed: &BTreeMap<String, Observed>,
    previous_leases: &BTreeSet<LeaseId>,
) -> BTreeMap<String, String> {
    observed
        .iter()
        .filter(|(_, record)| previous_leases.contains(&record.lease))
        .filter(|(key, record)| {
            host.parse(key).is_some_and(|key| {
                StoredRecord::parse(&key, &record.value).is_ok_and(|r| !r.bindings.is_empty())
            })
        })
        .filter_map(|(key, record)| {
            let value = std::str::from_utf8(&record.value).ok()?;
            Some((key.clone(), value.to_owned()))
        })
        .collect()
}

/// Applies operations that etcd confirmed to the agent's picture of etcd.
pub fn record_applied(
    observed: &mut BTreeMap<String, Observed>,
    operations: &[Operation],
    lease: LeaseId,
) {
    for operation in operations {
        match operation {
            Operation::Put { key, value } => {
                observed.insert(
                    key.clone(),
                    Observed {
                        value: value.as_bytes().to_vec(),
                        lease,
                    },
                );
            }
            Operation::Delete { key } => {
                observed.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn observed(entries: &[(&str, &str, LeaseId)]) -> BTreeMap<String, Observed> {
        entries
            .iter()
            .map(|(k, v, lease)| {
                (
                    k.to_string(),
                    Observed {
                        value: v.as_bytes().to_vec(),
                        lease: *lease,
                    },
                )
            })
            .collect()
    }

    fn put(key: &str, value: &str) -> Operation {
        Operation::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn delete(key: &str) -> Operation {
        Operation::Delete { key: key.into() }
    }

    #[test]
    fn nothing_to_do_when_equal() {
        let ops = plan(
            &desired(&[("a", "1")]),
            &observed(&[("a", "1", 7)]),
            Some(7),
        );
        assert!(ops.is_empty());
    }

    #[test]
    fn missing_records_are_written() {
        let ops = plan(
            &desired(&[("a", "1"), ("b", "2")]),
            &observed(&[("a", "1", 0)]),
            Some(0),
        );
        assert_eq!(ops, vec![put("b", "2")]);
    }

    #[test]
    fn changed_values_are_rewritten_in_place() {
        let ops = plan(
            &desired(&[("a", "new")]),
            &observed(&[("a", "old", 0)]),
            Some(0),
        );
        assert_eq!(ops, vec![put("a", "new")]);
    }

    #[test]
    fn a_record_on_another_lease_is_rewritten_not_deleted() {
        let ops = plan(
            &desired(&[("a", "1")]),
            &observed(&[("a", "1", 41)]),
            Some(42),
        );
        assert_eq!(ops, vec![put("a", "1")]);
        let ops = plan(
            &desired(&[("a", "1")]),
            &observed(&[("a", "1", 0)]),
            Some(42),
        );
        assert_eq!(ops, vec![put("a", "1")]);
    }

    #[test]
    fn stale_records_are_deleted_after_the_puts() {
        let ops = plan(
            &desired(&[("new", "1")]),
            &observed(&[("old", "1", 0), ("zzz", "9", 0)]),
            Some(0),
        );
        assert_eq!(ops, vec![put("new", "1"), delete("old"), delete("zzz")]);
    }

    #[test]
    fn empty_desired_clears_everything_observed() {
        let ops = plan(&desired(&[]), &observed(&[("a", "1", 3)]), Some(3));
        assert_eq!(ops, vec![delete("a")]);
    }

    #[test]
    fn applying_the_plan_makes_observed_equal_desired() {
        let want = desired(&[("a", "1"), ("b", "2")]);
        let mut have = observed(&[("a", "0", 1), ("c", "3", 1)]);
        let ops = plan(&want, &have, Some(2));
        record_applied(&mut have, &ops, 2);
        assert_eq!(have, observed(&[("a", "1", 2), ("b", "2", 2)]));
        assert!(plan(&want, &have, Some(2)).is_empty());
    }

    #[test]
    fn without_a_lease_policy_only_values_count() {
        let have = observed(&[("a", "1", 41), ("b", "old", 0), ("c", "3", 7)]);
        let ops = plan(&desired(&[("a", "1"), ("b", "2")]), &have, None);
        assert_eq!(ops, vec![put("b", "2"), delete("c")]);
    }

    #[test]
    fn before_the_engine_is_listed_only_the_previous_runs_records_are_kept_as_they_are() {
        let host = HostPrefix::new("/registered", "10.0.0.5".parse().unwrap());
        let record_of = |id: &str| {
            format!(
                r#"[{{"container":"{id}","image":"web:1","ip":"10.0.0.5","public_port":"8080","private_port":"80","port_type":"tcp"}}]"#
            )
        };
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let ours = format!("/registered/10.0.0.5/web:1/{a}");
        let other_host = format!("/registered/10.0.0.6/web:1/{a}");
        let junk = format!("/registered/10.0.0.5/web:1/{b}");
        let empty = format!("/registered/10.0.0.5/web:1/{c}");
        let off_layout = "/registered/10.0.0.5/web:1".to_owned();
        let forged = format!("/registered/10.0.0.5/web:1/{c}");
        let mut etcd = observed(&[
            (&ours, &record_of(&a), 7),
            (&other_host, &record_of(&a), 7),
            (&junk, "   ", 7),
            (&empty, "[]", 7),
            (&off_layout, &record_of(&a), 7),
        ]);
        assert_eq!(
            as_they_are(&host, &etcd, &BTreeSet::from([7])),
            desired(&[(&ours, &record_of(&a))])
        );
        // Moved onto our lease in place (the agent applies only the puts
        // before the engine has been listed).
        assert_eq!(
            plan(
                &as_they_are(&host, &etcd, &BTreeSet::from([7])),
                &etcd,
                Some(9)
            )
            .first(),
            Some(&put(&ours, &record_of(&a)))
        );
        // A well-formed record someone wrote on a lease of their own is not
        // adopted.
        etcd.insert(
            forged,
            Observed {
                value: record_of(&c).into_bytes(),
                lease: 8,
            },
        );
        assert_eq!(as_they_are(&host, &etcd, &BTreeSet::from([7])).len(), 1);
    }
}
