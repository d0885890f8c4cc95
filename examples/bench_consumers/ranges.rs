//! `--range-options`: what etcd does with each way of reading the whole
//! prefix, to justify how the consumers page their reads
//! (`src/store/paging.rs`). On the filled etcd, each way is repeated until
//! it has run for `--range-secs` (at least once), so that the 10 ms tick of
//! `/proc/<pid>/stat` does not dominate etcd's CPU time; the figures are per
//! read of the whole prefix (per request for the single pages). Every read
//! is checked to see every record.
//!
//! The ways: one range with no limit (what etcdctl does), linearizable and
//! serializable; the same with `keys_only` and with `count_only` (what the
//! index walk costs without the values); pages of 500 keys, and pages sized
//! by bytes as the consumers size theirs (1, 8 and 32 MiB), each from the
//! key after the last one to the end of the prefix, pinned to the first
//! page's revision; pages of 8 MiB whose range ends at the next page's first
//! key (known from a list of the keys read beforehand, which a consumer does
//! not have); and single pages of 500 keys, from the first key, the middle
//! one and the 500th before the end to the end of the prefix, and from the
//! first key to the 501st: what one page costs by where it starts and where
//! its range ends. The table and the JSON give, besides, the largest
//! response's key and value bytes: what the client holds at once.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use docker_etcd_register::store::paging::{key_after, prefix_end, PageSize};
use etcd_client::{Client, ConnectOptions, GetOptions, GetResponse, KvClient};
use serde_json::{json, Map, Value};

use crate::etcd::EtcdProcess;
use crate::records::ROOT;
use rig::process::check_interrupted;

use crate::progress;

const MIB: usize = 1024 * 1024;
/// The rule of `paging::PageSize`: the first page's keys, what one entry
/// costs beyond its bytes, the most keys of a page. The pages of the
/// consumers' target are checked against `PageSize` itself.
const FIRST_PAGE_KEYS: usize = 32;
const ENTRY_OVERHEAD_BYTES: usize = 128;
const MAX_PAGE_KEYS: usize = 65_536;
/// The consumers' target (`paging::TARGET_PAGE_BYTES`).
const CONSUMERS_PAGE_BYTES: usize = 8 * MIB;
/// The client's decoding limit: an unlimited range of a million records is
/// hundreds of MiB.
const MAX_RESPONSE_BYTES: usize = 1024 * MIB;
/// The keys of a page of a fixed count, and of the single pages.
const PAGE_KEYS: usize = 500;
/// How long etcd's CPU time is sampled while nothing reads it.
const IDLE: Duration = Duration::from_secs(2);
/// A pause before each way, so that etcd's garbage collection of the last
/// one's responses is not counted as the next one's.
const SETTLE: Duration = Duration::from_millis(500);

/// How many keys each page asks for.
#[derive(Debug, Clone, Copy)]
enum Sizing {
    Keys(usize),
    /// A target in key and value bytes, as `PageSize` sizes the pages.
    Bytes(usize),
}

impl Sizing {
    fn first(self) -> usize {
        match self {
            Sizing::Keys(keys) => keys,
            Sizing::Bytes(_) => FIRST_PAGE_KEYS,
        }
    }

    /// The keys of the page after one of `count` keys and `bytes` bytes
    /// (`PageSize::after_page`).
    fn after_page(self, count: usize, bytes: usize) -> Result<usize> {
        let Sizing::Bytes(target) = self else {
            return Ok(self.first());
        };
        let average = bytes.div_ceil(count.max(1)) + ENTRY_OVERHEAD_BYTES;
        let keys = (target / average).clamp(1, MAX_PAGE_KEYS);
        if target == CONSUMERS_PAGE_BYTES {
            let mut size = PageSize::first();
            size.after_page(count, bytes);
            ensure!(
                i64::try_from(keys)? == size.keys(),
                "the pages of {target} bytes are not sized as paging::PageSize sizes them"
            );
        }
        Ok(keys)
    }
}

/// One way of reading the prefix.
#[derive(Debug, Clone, Copy)]
enum Way {
    /// One range over the whole prefix, with no limit.
    Single {
        serializable: bool,
        keys_only: bool,
        count_only: bool,
    },
    /// Pages pinned to the first one's revision, each from the key after
    /// the previous page's last one to the end of the prefix, or (`bounded`)
    /// to the first key of the next page.
    Pages { sizing: Sizing, bounded: bool },
    /// One page of [`PAGE_KEYS`] keys from the key at index `from`, to the
    /// end of the prefix or (`bounded`) to the key after its last one.
    Page { from: usize, bounded: bool },
}

/// The ways measured on `records` records: JSON key, label, way.
fn ways(records: usize) -> Vec<(&'static str, String, Way)> {
    let single = |serializable, keys_only, count_only| Way::Single {
        serializable,
        keys_only,
        count_only,
    };
    let pages = |sizing, bounded| Way::Pages { sizing, bounded };
    let middle = records / 2;
    let last = records.saturating_sub(PAGE_KEYS);
    vec![
        (
            "unlimited",
            "1 range, no limit (linearizable)".into(),
            single(false, false, false),
        ),
        (
            "unlimited_serializable",
            "1 range, no limit, serializable".into(),
            single(true, false, false),
        ),
        (
            "keys_only",
            "1 range, keys_only".into(),
            single(false, true, false),
        ),
        (
            "count_only",
            "1 range, count_only".into(),
            single(false, false, true),
        ),
        (
            "pages_500_keys",
            format!("pages of {PAGE_KEYS} keys"),
            pages(Sizing::Keys(PAGE_KEYS), false),
        ),
        (
            "pages_1_mib",
            "pages of 1 MiB".into(),
            pages(Sizing::Bytes(MIB), false),
        ),
        (
            "pages_8_mib",
            "pages of 8 MiB (consumers')".into(),
            pages(Sizing::Bytes(8 * MIB), false),
        ),
        (
            "pages_32_mib",
            "pages of 32 MiB".into(),
            pages(Sizing::Bytes(32 * MIB), false),
        ),
        (
            "pages_8_mib_bounded",
            "pages of 8 MiB, end bounded".into(),
            pages(Sizing::Bytes(8 * MIB), true),
        ),
        (
            "page_500_from_first",
            format!("1 page of {PAGE_KEYS} from key 0"),
            Way::Page {
                from: 0,
                bounded: false,
            },
        ),
        (
            "page_500_from_middle",
            format!("1 page of {PAGE_KEYS} from key {middle}"),
            Way::Page {
                from: middle,
                bounded: false,
            },
        ),
        (
            "page_500_from_last",
            format!("1 page of {PAGE_KEYS} from key {last}"),
            Way::Page {
                from: last,
                bounded: false,
            },
        ),
        (
            "page_500_from_first_bounded",
            format!("1 page of {PAGE_KEYS} from key 0, bounded"),
            Way::Page {
                from: 0,
                bounded: true,
            },
        ),
    ]
}

/// Every key of the prefix, in order, in one buffer.
struct Keys {
    bytes: Vec<u8>,
    /// Where each key starts in `bytes`, and where the last one ends.
    starts: Vec<usize>,
}

impl Keys {
    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    fn get(&self, index: usize) -> Option<&[u8]> {
        let end = *self.starts.get(index + 1)?;
        Some(&self.bytes[self.starts[index]..end])
    }
}

/// What one read of a way asked and got.
#[derive(Debug, Clone, Copy, Default)]
struct Read {
    /// Range requests.
    requests: usize,
    /// Keys returned (the count, for `count_only`).
    keys: usize,
    /// The largest page asked for, in keys (0: no limit).
    max_limit: usize,
    /// The largest response's key and value bytes.
    max_response_bytes: usize,
}

/// One way's figures, per read.
#[derive(Debug, Clone)]
struct Figures {
    key: &'static str,
    label: String,
    /// Reads in the measurement.
    reads: usize,
    read: Read,
    wall_s: f64,
    etcd_cpu_s: f64,
}

/// Every way at one record count.
pub struct Report {
    /// etcd's CPU seconds per second while nothing reads it.
    idle_cpu: f64,
    /// Key and value bytes of the records.
    prefix_bytes: usize,
    figures: Vec<Figures>,
}

/// Measures every way on `etcd`, which holds `records` records, each for
/// at least `min_wall`; `timeout` bounds each request.
pub async fn measure(
    etcd: &EtcdProcess,
    records: usize,
    min_wall: Duration,
    timeout: Duration,
) -> Result<Report> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(timeout);
    let client = Client::connect([etcd.endpoint()], Some(options)).await?;
    let mut reader = Reader {
        kv: client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES),
        from: format!("{ROOT}/").into_bytes(),
        end: prefix_end(format!("{ROOT}/").as_bytes()),
        keys: Keys {
            bytes: Vec::new(),
            starts: vec![0],
        },
    };
    // The keys, for the bounded pages and where single pages start; and
    // every value read once, before anything is measured.
    reader.keys = reader.keys().await?;
    ensure!(
        reader.keys.len() == records,
        "etcd holds {} records, not {records}",
        reader.keys.len()
    );
    let prefix_bytes = reader.keys.bytes.len() + reader.value_bytes().await?;
    let idle_before = etcd.cpu_seconds()?;
    tokio::time::sleep(IDLE).await;
    let idle_cpu = (etcd.cpu_seconds()? - idle_before) / IDLE.as_secs_f64();
    let mut figures = Vec::new();
    for (key, label, way) in ways(records) {
        check_interrupted()?;
        progress(&format!("{records} records, range option: {label}"));
        let expected = match way {
            Way::Page { from, .. } => (records - from).min(PAGE_KEYS),
            _ => records,
        };
        tokio::time::sleep(SETTLE).await;
        let cpu_before = etcd.cpu_seconds()?;
        let started = Instant::now();
        let mut reads = 0;
        let mut read = Read::default();
        while reads == 0 || started.elapsed() < min_wall {
            check_interrupted()?;
            read = reader.read(way).await?;
            ensure!(
                read.keys == expected,
                "{label}: {} keys read, not {expected}",
                read.keys
            );
            reads += 1;
        }
        let wall_s = started.elapsed().as_secs_f64() / reads as f64;
        let etcd_cpu_s = (etcd.cpu_seconds()? - cpu_before) / reads as f64;
        progress(&format!(
            "  {reads} read(s) of {} request(s): wall {wall_s:.4} s, etcd CPU {etcd_cpu_s:.4} s per read",
            read.requests
        ));
        figures.push(Figures {
            key,
            label,
            reads,
            read,
            wall_s,
            etcd_cpu_s,
        });
    }
    Ok(Report {
        idle_cpu,
        prefix_bytes,
        figures,
    })
}

/// The client, and what it reads.
struct Reader {
    kv: KvClient,
    /// The prefix.
    from: Vec<u8>,
    /// The end of its range.
    end: Vec<u8>,
    keys: Keys,
}

impl Reader {
    async fn get(&mut self, from: &[u8], options: GetOptions) -> Result<GetResponse> {
        self.kv
            .get(from, Some(options))
            .await
            .with_context(|| format!("range from {}", String::from_utf8_lossy(from)))
    }

    /// Every key of the prefix.
    async fn keys(&mut self) -> Result<Keys> {
        let options = GetOptions::new()
            .with_range(self.end.clone())
            .with_keys_only();
        let from = self.from.clone();
        let response = self.get(&from, options).await?;
        let mut keys = Keys {
            bytes: Vec::new(),
            starts: vec![0],
        };
        for kv in response.kvs() {
            keys.bytes.extend_from_slice(kv.key());
            keys.starts.push(keys.bytes.len());
        }
        Ok(keys)
    }

    /// The bytes of every value of the prefix.
    async fn value_bytes(&mut self) -> Result<usize> {
        let options = GetOptions::new().with_range(self.end.clone());
        let from = self.from.clone();
        let response = self.get(&from, options).await?;
        Ok(response.kvs().iter().map(|kv| kv.value().len()).sum())
    }

    /// Reads the prefix (or one page of it) the way `way` does.
    async fn read(&mut self, way: Way) -> Result<Read> {
        match way {
            Way::Single {
                serializable,
                keys_only,
                count_only,
            } => {
                let mut options = GetOptions::new().with_range(self.end.clone());
                if serializable {
                    options = options.with_serializable();
                }
                if keys_only {
                    options = options.with_keys_only();
                }
                if count_only {
                    options = options.with_count_only();
                }
                let from = self.from.clone();
                let response = self.get(&from, options).await?;
                let (keys, bytes) = tally(&response);
                Ok(Read {
                    requests: 1,
                    keys: if count_only {
                        usize::try_from(response.count())?
                    } else {
                        keys
                    },
                    max_limit: 0,
                    max_response_bytes: bytes,
                })
            }
            Way::Pages { sizing, bounded } => self.pages(sizing, bounded).await,
            Way::Page { from, bounded } => {
                let start = self.keys.get(from).context("no such key")?.to_vec();
                let end = match self.keys.get(from + PAGE_KEYS) {
                    Some(next) if bounded => next.to_vec(),
                    _ => self.end.clone(),
                };
                let options = GetOptions::new()
                    .with_range(end)
                    .with_limit(PAGE_KEYS as i64);
                let response = self.get(&start, options).await?;
                let (keys, bytes) = tally(&response);
                Ok(Read {
                    requests: 1,
                    keys,
                    max_limit: PAGE_KEYS,
                    max_response_bytes: bytes,
                })
            }
        }
    }

    /// Pages as `paging::read_prefix` reads them, with `sizing`'s limits;
    /// `bounded`: each range ends at the first key of the next page.
    async fn pages(&mut self, sizing: Sizing, bounded: bool) -> Result<Read> {
        let mut read = Read::default();
        let mut from = self.from.clone();
        let mut limit = sizing.first();
        let mut revision = 0;
        loop {
            let end = match self.keys.get(read.keys + limit) {
                Some(next) if bounded => next.to_vec(),
                _ => self.end.clone(),
            };
            let options = GetOptions::new()
                .with_range(end)
                .with_limit(i64::try_from(limit)?)
                .with_revision(revision);
            let response = self.get(&from, options).await?;
            if revision == 0 {
                revision = response.header().context("no header")?.revision();
            }
            let (count, bytes) = tally(&response);
            read.requests += 1;
            read.keys += count;
            read.max_limit = read.max_limit.max(limit);
            read.max_response_bytes = read.max_response_bytes.max(bytes);
            let more = if bounded {
                read.keys < self.keys.len()
            } else {
                response.more()
            };
            match response.kvs().last() {
                Some(last) if more => {
                    from = key_after(last.key());
                    limit = sizing.after_page(count, bytes)?;
                }
                _ => return Ok(read),
            }
        }
    }
}

/// The keys of a response and their key and value bytes.
fn tally(response: &GetResponse) -> (usize, usize) {
    let bytes = response
        .kvs()
        .iter()
        .map(|kv| kv.key().len() + kv.value().len())
        .sum();
    (response.kvs().len(), bytes)
}

impl Report {
    /// The unlimited linearizable range's figures, the measure of the rest.
    fn unlimited(&self) -> Option<&Figures> {
        self.figures.iter().find(|f| f.key == "unlimited")
    }

    pub fn table(&self) -> String {
        let mut text = format!(
            "\nranges over the whole prefix {ROOT}/ ({:.1} MiB of keys and values): per read \
             (per request for the single pages), over as many reads as fill the time asked \
             for; × wall, × CPU: as a multiple of the unlimited linearizable range's; keys/page: \
             the largest limit asked for; etcd CPU idle: {:.4} s per second\n",
            self.prefix_bytes as f64 / MIB as f64,
            self.idle_cpu
        );
        text.push_str(&format!(
            "{:<34} {:>8} {:>6} {:>9} {:>10} {:>10} {:>7} {:>7} {:>12}\n",
            "",
            "requests",
            "reads",
            "keys/page",
            "wall s",
            "etcd CPU s",
            "× wall",
            "× CPU",
            "max resp MiB"
        ));
        let unlimited = self.unlimited();
        for f in &self.figures {
            let ratio = |value: f64, of: fn(&Figures) -> f64| {
                unlimited.map_or_else(|| "-".into(), |u| format!("{:.2}", value / of(u)))
            };
            let limit = if f.read.max_limit == 0 {
                "-".to_string()
            } else {
                f.read.max_limit.to_string()
            };
            text.push_str(&format!(
                "{:<34} {:>8} {:>6} {:>9} {:>10.5} {:>10.5} {:>7} {:>7} {:>12.2}\n",
                f.label,
                f.read.requests,
                f.reads,
                limit,
                f.wall_s,
                f.etcd_cpu_s,
                ratio(f.wall_s, |u| u.wall_s),
                ratio(f.etcd_cpu_s, |u| u.etcd_cpu_s),
                f.read.max_response_bytes as f64 / MIB as f64,
            ));
        }
        text
    }

    pub fn json(&self) -> Value {
        let unlimited = self.unlimited();
        let mut ways = Map::new();
        for f in &self.figures {
            let mut way = json!({
                "label": f.label,
                "requests": f.read.requests,
                "reads": f.reads,
                "max_page_keys": f.read.max_limit,
                "wall_s": round(f.wall_s),
                "etcd_cpu_s": round(f.etcd_cpu_s),
                "max_response_mib": round(f.read.max_response_bytes as f64 / MIB as f64),
            });
            if let Some(u) = unlimited {
                way["wall_vs_unlimited"] = round(f.wall_s / u.wall_s);
                way["etcd_cpu_vs_unlimited"] = round(f.etcd_cpu_s / u.etcd_cpu_s);
            }
            ways.insert(f.key.into(), way);
        }
        json!({
            "prefix_mib": round(self.prefix_bytes as f64 / MIB as f64),
            "etcd_idle_cpu_s_per_s": round(self.idle_cpu),
            "ways": ways,
        })
    }
}

/// Six decimals: a single page costs well under a millisecond.
fn round(value: f64) -> Value {
    json!((value * 1e6).round() / 1e6)
}
