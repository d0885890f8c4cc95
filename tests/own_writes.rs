//! Which of the changes under its prefix an agent takes for its own: only
//! revisions that its own transactions created. A transaction that changes
//! nothing (a delete of a key someone else already deleted) answers with the
//! current revision, which is someone else's write, and must not hide that
//! write from the repair (README: Faults).

use docker_etcd_register::config::EtcdSecurity;
use docker_etcd_register::etcd::Etcd as EtcdAdapter;
use docker_etcd_register::plan::Operation;
use docker_etcd_register::record::HostPrefix;
use rig::{delete, revision, runtime, Etcd};

#[test]
fn a_transaction_that_changes_nothing_reports_no_revision_of_its_own() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let host = HostPrefix::new("/registered", "10.0.0.5".parse().unwrap());
    let key = format!("{}busybox:latest/{}", host.as_str(), "a".repeat(64));
    let mut adapter = EtcdAdapter::new(
        std::slice::from_ref(&endpoint),
        EtcdSecurity::default(),
        host,
    );
    let put = Operation::Put {
        key: key.clone(),
        value: "{}".to_owned(),
    };
    let written = runtime().block_on(adapter.apply(&[put], 0, None)).unwrap();
    assert_eq!(
        written.revisions,
        [revision(&endpoint)],
        "a put creates a revision"
    );

    assert_eq!(delete(&endpoint, &key), 1);
    let foreign = revision(&endpoint);
    let gone = Operation::Delete { key: key.clone() };
    let applied = runtime().block_on(adapter.apply(&[gone], 0, None)).unwrap();
    assert_eq!(applied.done.len(), 1, "the delete is confirmed");
    assert_eq!(revision(&endpoint), foreign, "it created no revision");
    assert!(
        applied.revisions.is_empty(),
        "the foreign delete at r{foreign} is not ours: {:?}",
        applied.revisions
    );
}
