//! The consumers' informer (`informer.rs`) on the simulated cluster: a
//! change is applied from the watch, never by reading the prefix again; a
//! change that alters nothing kept is no update; hostile keys are counted,
//! never rows; an outage, a compaction and a cancelled watch each cost one
//! read from scratch, after which the index is what etcd holds.

use std::time::Duration;

use tokio::time::{sleep, timeout};

use super::cluster::{Actor, Cluster, Reach, Write};
use super::records::SimRecords;
use crate::informer::{Informer, Source};
use crate::listing::{Filter, Index};

const ROOT: &str = "/registered/";

fn put(cluster: &Cluster, key: &str, value: &str) {
    let write = Write::Put(key.to_owned(), value.as_bytes().to_vec());
    cluster.txn(Actor::Foreign, &[write], 0, None).unwrap();
}

fn delete(cluster: &Cluster, key: &str) {
    let write = Write::Delete(key.to_owned());
    cluster.txn(Actor::Foreign, &[write], 0, None).unwrap();
}

/// A record of container `id` (a hex digit) on host `10.0.0.<n>`, serving
/// on `port`.
fn record(cluster: &Cluster, n: u8, id: char, port: u16) -> String {
    let id = id.to_string().repeat(64);
    let key = format!("{ROOT}10.0.0.{n}/web/{id}");
    put(
        cluster,
        &key,
        &format!(
            r#"[{{"container":"{id}","image":"web:1","ip":"10.0.0.{n}","public_port":"{port}","private_port":"80","port_type":"tcp"}}]"#
        ),
    );
    key
}

fn keys(index: &Index) -> Vec<String> {
    index.rows().map(|row| row.key.to_owned()).collect()
}

/// Every host's records that `filter` admits.
fn everything(filter: &Filter) -> Source<'_> {
    Source {
        root: ROOT,
        prefix: ROOT,
        filter,
    }
}

/// What a fresh read of the cluster finds: the index must equal it.
async fn fresh(cluster: &Cluster, filter: &Filter) -> Vec<String> {
    let mut records = SimRecords::new(cluster.clone(), 9);
    let read = crate::informer::read(&mut records, &everything(filter)).await;
    keys(&read.unwrap().index)
}

/// Waits (simulated time) for the next update, or says there was none.
async fn next<R: crate::store::RecordSource>(informer: &mut Informer<'_, R>) -> bool {
    timeout(Duration::from_secs(30), informer.next_update())
        .await
        .is_ok_and(|update| update.rows)
}

#[tokio::test(start_paused = true)]
async fn changes_come_from_the_watch_without_reading_again() {
    let cluster = Cluster::new();
    let a = record(&cluster, 1, 'a', 8080);
    let filter = Filter::default();
    let records = SimRecords::new(cluster.clone(), 0);
    let ranges = records.ranges();
    let mut informer = Informer::start(records, everything(&filter)).await;
    let after_start = ranges.get();
    assert_eq!(keys(informer.index()), std::slice::from_ref(&a));

    let b = record(&cluster, 2, 'b', 8080);
    assert!(next(&mut informer).await);
    assert_eq!(keys(informer.index()), [a.clone(), b.clone()]);
    record(&cluster, 2, 'b', 9090);
    assert!(next(&mut informer).await, "a changed value is an update");
    delete(&cluster, &a);
    assert!(next(&mut informer).await);
    assert_eq!(keys(informer.index()), std::slice::from_ref(&b));
    assert_eq!(keys(informer.index()), fresh(&cluster, &filter).await);
    assert_eq!(ranges.get(), after_start, "no change read the prefix again");

    // The same value written again, a key outside the filter: no update.
    record(&cluster, 2, 'b', 9090);
    assert!(!next(&mut informer).await);
}

#[tokio::test(start_paused = true)]
async fn what_the_filter_leaves_out_is_neither_kept_nor_an_update() {
    let cluster = Cluster::new();
    let a = record(&cluster, 1, 'a', 8080);
    let filter = Filter {
        host: Some("10.0.0.1".parse().unwrap()),
        ..Filter::default()
    };
    let mut informer =
        Informer::start(SimRecords::new(cluster.clone(), 0), everything(&filter)).await;
    record(&cluster, 2, 'b', 8080);
    put(&cluster, &format!("{ROOT}10.0.0.2/junk"), "x");
    assert!(!next(&mut informer).await);
    assert_eq!(keys(informer.index()), [a]);
    assert_eq!(informer.index().len(), 1);
    assert_eq!(informer.index().unreadables().count, 0);
}

#[tokio::test(start_paused = true)]
async fn hostile_keys_are_counted_and_their_removal_is_seen() {
    let cluster = Cluster::new();
    let a = record(&cluster, 1, 'a', 8080);
    let id = "b".repeat(64);
    let hostile = [
        (format!("{ROOT}10.0.0.1/we\nb/{id}"), "[]".to_owned()),
        (
            format!("{ROOT}10.0.0.1/web/{id}"),
            format!(
                r#"[{{"container":"{id}","image":"web:1","ip":"127.0.0.1","public_port":"1","private_port":"80","port_type":"tcp"}}]"#
            ),
        ),
        (format!("{ROOT}10.0.0.1/web"), "x".to_owned()),
    ];
    for (key, value) in &hostile {
        put(&cluster, key, value);
    }
    let filter = Filter::default();
    let mut informer =
        Informer::start(SimRecords::new(cluster.clone(), 0), everything(&filter)).await;
    assert_eq!(keys(informer.index()), std::slice::from_ref(&a));
    assert_eq!(informer.index().unreadables().count, 3);

    // A record that turns hostile is a row no more, and an unreadable key.
    put(&cluster, &a, "not json");
    assert!(next(&mut informer).await);
    assert!(keys(informer.index()).is_empty());
    assert_eq!(informer.index().unreadables().count, 4);
    for (key, _) in &hostile {
        delete(&cluster, key);
    }
    let update = timeout(Duration::from_secs(5), informer.next_update()).await;
    assert!(update.is_ok_and(|update| update.unreadable && !update.rows));
    assert_eq!(informer.index().unreadables().count, 1);
    assert_eq!(informer.index().unreadables().named[0].key, a);
}

/// An outage breaks the watch; the records written meanwhile are read once
/// it is over, and the update says the rows changed.
#[tokio::test(start_paused = true)]
async fn an_outage_costs_one_read_from_scratch() {
    let cluster = Cluster::new();
    let a = record(&cluster, 1, 'a', 8080);
    let filter = Filter::default();
    let mut informer =
        Informer::start(SimRecords::new(cluster.clone(), 0), everything(&filter)).await;
    let outage = async {
        sleep(Duration::from_secs(1)).await;
        cluster.add_reach(0, 1, Reach::Refused);
        sleep(Duration::from_secs(5)).await;
        let b = record(&cluster, 2, 'c', 8080);
        delete(&cluster, &a);
        cluster.heal(1);
        b
    };
    let (updated, b) = tokio::join!(next(&mut informer), outage);
    assert!(updated);
    assert_eq!(keys(informer.index()), [b]);
    assert_eq!(keys(informer.index()), fresh(&cluster, &filter).await);
}

/// A compaction past the watch's revision (etcd cancels such a watch) and a
/// watch cancelled for no reason (a leader change): each is a read from
/// scratch at a new revision, and nothing written meanwhile is lost.
#[tokio::test(start_paused = true)]
async fn a_compaction_or_a_cancelled_watch_is_read_again() {
    let cluster = Cluster::new();
    record(&cluster, 1, 'a', 8080);
    let filter = Filter::default();
    let records = SimRecords::new(cluster.clone(), 0);
    let ranges = records.ranges();
    let mut informer = Informer::start(records, everything(&filter)).await;
    let before = ranges.get();

    // Compacted while unwatched: the next watch from the old revision is
    // refused, as etcd refuses it.
    cluster.add_reach(0, 1, Reach::Refused);
    record(&cluster, 2, 'b', 8080);
    cluster.compact();
    let heal = async {
        sleep(Duration::from_secs(2)).await;
        cluster.heal(1);
    };
    let (updated, ()) = tokio::join!(next(&mut informer), heal);
    assert!(updated);
    assert_eq!(keys(informer.index()), fresh(&cluster, &filter).await);
    assert!(ranges.get() > before);

    let revision = informer.revision();
    cluster.cancel_watches();
    record(&cluster, 3, 'c', 8080);
    assert!(next(&mut informer).await);
    assert!(informer.revision() > revision);
    assert_eq!(keys(informer.index()).len(), 3);
    assert_eq!(keys(informer.index()), fresh(&cluster, &filter).await);
}
