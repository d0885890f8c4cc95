//! Pure: the arithmetic of reading a prefix in pages — where the range ends,
//! where the next page starts, and how many keys to ask for so that one page
//! stays near a target size even when single values are large. The requests
//! themselves are made by `etcd::Connection::read_prefix`.

/// The most keys one page asks for: Kubernetes' default page size for its
/// lists, large enough that a prefix of ordinary records (a few hundred
/// bytes each) needs few round trips.
const MAX_PAGE_KEYS: usize = 500;

/// The keys the first page asks for, before anything is known about the size
/// of the values. Small, so that a prefix full of values of etcd's maximum
/// size (1.5 MiB by default) makes etcd build a response of a few dozen MiB
/// at most before the page is sized down, not one of hundreds.
const FIRST_PAGE_KEYS: usize = 32;

/// Key and value bytes a page aims at once the size of the values is known:
/// far below the decoding limit (`etcd::MAX_RESPONSE_BYTES`), so that values
/// somewhat larger than the ones seen so far still fit.
const TARGET_PAGE_BYTES: usize = 1024 * 1024;

/// The end of the range of keys that start with `prefix` (exclusive): the
/// prefix with its last byte that is not `0xff` incremented and the rest
/// dropped, as etcd's own clients compute it; `[0]` (every key from the
/// prefix on) when there is no such byte.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&byte| byte != 0xff) {
        Some(last) => {
            let mut end = prefix[..=last].to_vec();
            end[last] += 1;
            end
        }
        None => vec![0],
    }
}

/// The smallest key after `key`: where the page after the one that ended
/// with `key` starts.
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// How many keys the next page asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize {
    /// The key limit of the next range request; at least 1.
    keys: usize,
}

impl PageSize {
    pub fn first() -> Self {
        Self {
            keys: FIRST_PAGE_KEYS,
        }
    }

    /// The limit of the next range request.
    pub fn keys(self) -> i64 {
        i64::try_from(self.keys).unwrap_or(i64::MAX)
    }

    /// After a page of `count` keys holding `bytes` key and value bytes:
    /// as many keys as make [`TARGET_PAGE_BYTES`] at that page's average
    /// size, between 1 and [`MAX_PAGE_KEYS`].
    pub fn after_page(&mut self, count: usize, bytes: usize) {
        if count == 0 {
            return;
        }
        let average = bytes.div_ceil(count).max(1);
        self.keys = (TARGET_PAGE_BYTES / average).clamp(1, MAX_PAGE_KEYS);
    }

    /// After a response was refused for exceeding the decoding limit: half as
    /// many keys. `false` when the page was a single key already, which no
    /// smaller page can fetch.
    pub fn halve(&mut self) -> bool {
        if self.keys == 1 {
            return false;
        }
        self.keys /= 2;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_of_a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"/registered/"), b"/registered0".to_vec());
        assert_eq!(prefix_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
        assert_eq!(key_after(b"/r/a"), b"/r/a\0".to_vec());
        assert!(key_after(b"/r/a").as_slice() < b"/r/a0".as_slice());
    }

    #[test]
    fn small_values_grow_the_page_to_its_maximum() {
        let mut size = PageSize::first();
        assert_eq!(size.keys(), 32);
        size.after_page(32, 32 * 300);
        assert_eq!(size.keys(), 500);
    }

    #[test]
    fn large_values_shrink_the_page_to_the_target_bytes() {
        let mut size = PageSize::first();
        size.after_page(4, 4 * 64 * 1024);
        assert_eq!(size.keys(), 16);
        size.after_page(2, 3 * 1024 * 1024);
        assert_eq!(size.keys(), 1, "a value above the target: one per page");
        size.after_page(0, 0);
        assert_eq!(size.keys(), 1, "an empty page tells nothing");
    }

    #[test]
    fn halving_stops_at_one_key() {
        let mut size = PageSize::first();
        let mut halvings = 0;
        while size.halve() {
            halvings += 1;
        }
        assert_eq!((halvings, size.keys()), (5, 1));
    }
}
