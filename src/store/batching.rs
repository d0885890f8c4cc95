//! Writing a list of operations in as few transactions as etcd allows: the
//! etcd adapter does it against a real cluster, the simulator's store
//! against its model, with the same code.

use crate::plan::Operation;

use super::{Applied, StoreError};

/// etcd's default `--max-txn-ops`.
pub const MAX_OPERATIONS_PER_TXN: usize = 128;
/// Key and value bytes per transaction: below etcd's default
/// `--max-request-bytes` (1.5 MiB) with room for framing.
pub const MAX_BYTES_PER_TXN: usize = 1024 * 1024;

/// Applies `operations` in order, in consecutive batches within etcd's
/// default limits, each by one call of `txn` (which returns the revision it
/// created, or none when it changed nothing: only revisions our own
/// transactions created may be taken for our own writes in the watch). A batch refused as too large (a cluster with lower limits, or
/// one record over them) is split in halves, and so on: a cluster with half
/// the default limits costs one more transaction per batch, and one record
/// over the limits costs a few, not one per operation. An operation refused
/// on its own is reported in `rejected` and skipped, so that it cannot hold
/// up the others. Any other failure stops the list.
pub async fn apply_in_batches(
    operations: &[Operation],
    mut txn: impl AsyncFnMut(&[Operation]) -> Result<Option<i64>, StoreError>,
) -> Result<Applied, StoreError> {
    let mut applied = Applied::default();
    // Last in, first out: the next batch to apply is on top.
    let mut stack = batches(operations);
    stack.reverse();
    while let Some(batch) = stack.pop() {
        match txn(batch).await {
            Ok(revision) => {
                applied.done.extend_from_slice(batch);
                applied.revisions.extend(revision);
            }
            Err(StoreError::TooLarge(_)) if batch.len() > 1 => {
                let (first, second) = batch.split_at(batch.len() / 2);
                stack.push(second);
                stack.push(first);
            }
            Err(error @ StoreError::TooLarge(_)) => {
                applied.rejected.push((batch[0].clone(), error));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(applied)
}

/// Consecutive slices of `operations` within etcd's per-transaction limits.
fn batches(operations: &[Operation]) -> Vec<&[Operation]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, operation) in operations.iter().enumerate() {
        let size = operation.payload_bytes();
        let full = index - start == MAX_OPERATIONS_PER_TXN || bytes + size > MAX_BYTES_PER_TXN;
        if full && index > start {
            batches.push(&operations[start..index]);
            start = index;
            bytes = 0;
        }
        bytes += size;
    }
    if start < operations.len() {
        batches.push(&operations[start..]);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, bytes: usize) -> Operation {
        Operation::Put {
            key: key.to_owned(),
            value: "x".repeat(bytes),
        }
    }

    fn sizes(operations: &[Operation]) -> Vec<usize> {
        batches(operations).iter().map(|b| b.len()).collect()
    }

    #[test]
    fn batches_respect_the_operation_limit() {
        let ops: Vec<_> = (0..300).map(|i| put(&i.to_string(), 1)).collect();
        assert_eq!(sizes(&ops), vec![128, 128, 44]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn batches_respect_the_byte_limit() {
        let ops = vec![put("a", 600_000), put("b", 600_000), put("c", 10)];
        assert_eq!(sizes(&ops), vec![1, 2]);
    }

    #[test]
    fn an_oversized_operation_gets_a_batch_of_its_own() {
        let ops = vec![put("a", 10), put("b", 3_000_000), put("c", 10)];
        assert_eq!(sizes(&ops), vec![1, 1, 1]);
    }

    #[tokio::test]
    async fn a_batch_too_large_is_halved_until_only_the_refused_operation_is_left() {
        let ops = vec![put("a", 10), put("big", 100), put("c", 10)];
        let mut calls = Vec::new();
        let mut revision = 10;
        let applied = apply_in_batches(&ops, async |batch: &[Operation]| {
            calls.push(batch.len());
            if batch.iter().any(|op| op.payload_bytes() > 50) {
                return Err(StoreError::TooLarge(
                    "etcdserver: request is too large".into(),
                ));
            }
            revision += 1;
            Ok(Some(revision))
        })
        .await
        .unwrap();
        assert_eq!(calls, [3, 1, 2, 1, 1]);
        assert_eq!(applied.done, [ops[0].clone(), ops[2].clone()]);
        assert_eq!(applied.rejected.len(), 1);
        assert_eq!(applied.revisions, [11, 12]);
    }

    #[tokio::test]
    async fn a_lower_operation_limit_costs_one_more_transaction_per_halving() {
        let ops: Vec<_> = (0..128).map(|i| put(&i.to_string(), 1)).collect();
        let mut calls = Vec::new();
        let applied = apply_in_batches(&ops, async |batch: &[Operation]| {
            calls.push(batch.len());
            if batch.len() > 50 {
                let refused = "etcdserver: too many operations in txn request";
                return Err(StoreError::TooLarge(refused.into()));
            }
            Ok(Some(1))
        })
        .await
        .unwrap();
        assert_eq!(calls, [128, 64, 32, 32, 64, 32, 32]);
        assert_eq!(applied.done, ops, "all applied, in order");
    }

    #[tokio::test]
    async fn a_transaction_that_changed_nothing_adds_no_revision_of_ours() {
        let ops = vec![put("a", 600_000), put("b", 600_000)];
        let mut next = vec![None, Some(7)];
        let applied = apply_in_batches(&ops, async |_: &[Operation]| Ok(next.remove(0)))
            .await
            .unwrap();
        assert_eq!(applied.done, ops, "both confirmed");
        assert_eq!(applied.revisions, [7], "only the revision a write created");
    }

    #[tokio::test]
    async fn any_other_failure_stops_the_list() {
        let ops = vec![put("a", 10)];
        let result = apply_in_batches(&ops, async |_: &[Operation]| {
            Err(StoreError::Failed("connection refused".into()))
        })
        .await;
        assert!(matches!(result, Err(StoreError::Failed(_))));
    }
}
