//! Reading a prefix in pages pinned to one revision ([`read_prefix`]), for
//! the etcd adapter and the simulator's store alike, which make the requests
//! themselves; and its arithmetic: where the range ends, where the next page
//! starts, and how many keys to ask for so that one page stays near a target
//! size even when single values are large.

use tracing::debug;

use crate::plan::LeaseId;

/// The keys the first page asks for, before anything is known about the size
/// of the values. Small, so that a prefix full of values of etcd's maximum
/// size (1.5 MiB by default) makes etcd build a response of a few dozen MiB
/// at most before the page is sized down, not one of hundreds.
const FIRST_PAGE_KEYS: usize = 32;

/// Key and value bytes a page aims at once the size of the values is known.
/// Pages are sized by bytes, not keys, because of what etcd 3.4 does with a
/// range that has a limit: it collects the revision of *every* key from the
/// page's first key to the end of the prefix before it takes the first
/// `limit` of them, so each page costs a walk over the rest of the prefix.
/// Pages of 500 keys made a read of 100,000 records 200 such walks (13 times
/// the etcd CPU of one unlimited range); pages of a few MiB make it a
/// handful, and the client still never holds more than one page. Below the
/// etcd adapter's decoding limit (64 MiB) by enough that values several
/// times larger than the ones seen so far still fit.
const TARGET_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// What one key-value costs beyond its bytes, in a response and once the
/// client decoded it (its framing, two buffers and four numbers): counted,
/// so that a prefix of tiny keys makes pages of the target size too.
const ENTRY_OVERHEAD_BYTES: usize = 128;

/// The most keys one page asks for, whatever their size: bounds what etcd
/// builds when tiny keys are followed by large values.
const MAX_PAGE_KEYS: usize = 65_536;

/// How often a paged read starts again because etcd compacted the revision
/// its first page was read at; compactions are minutes apart, so a second
/// attempt normally succeeds.
const MAX_READ_ATTEMPTS: usize = 3;

/// One range request of a paged read.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a> {
    /// The first key of the range.
    pub from: &'a [u8],
    /// The end of the range (exclusive).
    pub end: &'a [u8],
    /// The most keys to return.
    pub limit: i64,
    /// The revision to read at; `0`: the newest (for the first page).
    pub revision: i64,
}

/// A page as the store answered it.
pub trait Page {
    /// The revision it was read at.
    fn revision(&self) -> i64;
    /// Whether keys remain in the range after this page.
    fn more(&self) -> bool;
    /// Its key-values, in key order.
    fn entries(&self) -> impl Iterator<Item = RawEntry<'_>>;
}

/// One key-value of a page, as the store has it.
pub struct RawEntry<'page> {
    pub key: &'page [u8],
    pub value: &'page [u8],
    /// The lease the key rides on; `0`: none.
    pub lease: LeaseId,
}

/// One key-value of a paged read, borrowed from its page: the fold copies
/// what it keeps.
pub struct Entry<'page> {
    /// The whole key, prefix included.
    pub key: &'page str,
    /// The value as etcd holds it.
    pub value: &'page [u8],
    /// The lease the key rides on; `0`: none.
    pub lease: LeaseId,
}

/// What a paged read folded together, and the revision it was read at.
pub struct PrefixRead<T> {
    /// What the fold made of every key-value.
    pub content: T,
    /// The revision every page was read at: a watch that starts right after
    /// it misses no change and repeats none.
    pub revision: i64,
}

/// Why a page could not be read, as far as paging can do something about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFailure {
    /// The response exceeded the client's decoding limit: ask for fewer keys.
    TooLarge,
    /// The pinned revision was compacted: read again from the start.
    Compacted,
    /// Anything else: the read fails.
    Other,
}

/// Every key (that is UTF-8) under `prefix` and its value, folded into what
/// `start` makes, read in pages of one consistent revision, which is
/// returned. Only one page is in memory at a time, besides what `fold`
/// keeps.
///
/// Each page is a range (fetched by `fetch`) from the key after the previous
/// page's last key to the end of the prefix, limited in keys (sized by
/// [`PageSize`]) and pinned to the revision of the first page. A page too
/// large for the client is asked for again with half the keys; if the store
/// compacted that revision meanwhile, the read starts over. `classify` tells
/// which of these an error is.
pub async fn read_prefix<P: Page, E, T>(
    prefix: &str,
    start: impl Fn() -> T,
    mut fold: impl FnMut(&mut T, Entry<'_>),
    mut fetch: impl AsyncFnMut(PageRequest<'_>) -> Result<P, E>,
    classify: impl Fn(&E) -> PageFailure,
) -> Result<PrefixRead<T>, E> {
    let end = prefix_end(prefix.as_bytes());
    let mut attempt = 1;
    'read: loop {
        let mut content = start();
        let mut size = PageSize::first();
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let request = PageRequest {
                from: &from,
                end: &end,
                limit: size.keys(),
                revision,
            };
            let page = match fetch(request).await {
                Ok(page) => page,
                Err(error) => match classify(&error) {
                    PageFailure::TooLarge if size.halve() => {
                        debug!(keys = size.keys(), "page too large; asking for fewer keys");
                        continue;
                    }
                    PageFailure::Compacted if attempt < MAX_READ_ATTEMPTS => {
                        debug!(revision, "revision compacted while paging; reading again");
                        attempt += 1;
                        continue 'read;
                    }
                    _ => return Err(error),
                },
            };
            if revision == 0 {
                revision = page.revision();
            }
            let (mut count, mut bytes, mut last) = (0, 0, None);
            for entry in page.entries() {
                count += 1;
                bytes += entry.key.len() + entry.value.len();
                last = Some(entry.key);
                if let Ok(key) = std::str::from_utf8(entry.key) {
                    let entry = Entry {
                        key,
                        value: entry.value,
                        lease: entry.lease,
                    };
                    fold(&mut content, entry);
                }
            }
            match last {
                Some(last) if page.more() => {
                    from = key_after(last);
                    size.after_page(count, bytes);
                }
                _ => return Ok(PrefixRead { content, revision }),
            }
        }
    }
}

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
    /// size (with [`ENTRY_OVERHEAD_BYTES`]), between 1 and
    /// [`MAX_PAGE_KEYS`].
    pub fn after_page(&mut self, count: usize, bytes: usize) {
        if count == 0 {
            return;
        }
        let average = bytes.div_ceil(count) + ENTRY_OVERHEAD_BYTES;
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
    fn small_values_make_pages_of_many_keys() {
        let mut size = PageSize::first();
        assert_eq!(size.keys(), 32);
        size.after_page(32, 32 * 384);
        assert_eq!(size.keys(), 16 * 1024);
        size.after_page(32, 0);
        assert_eq!(size.keys(), MAX_PAGE_KEYS as i64, "empty values: capped");
    }

    #[test]
    fn large_values_shrink_the_page_to_the_target_bytes() {
        let mut size = PageSize::first();
        size.after_page(4, 4 * (512 * 1024 - ENTRY_OVERHEAD_BYTES));
        assert_eq!(size.keys(), 16);
        size.after_page(2, 20 * 1024 * 1024);
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
