//! Disk spool benchmark (`cargo bench --bench spool`): what the spool costs and what the
//! disk under it can do. See BENCHMARKS.md, "Spool".
//!
//! Rows (task names, for `LOGSENDER_BENCH_FILTER`):
//!
//! - `append/POLICY/SIZE`: the collector is down, so every payload goes to disk; a
//!   4-worker sender with a spool under `SpoolSync` POLICY (`every-append`,
//!   `interval` = the default 100 ms, `os`) takes pre-built payloads of SIZE (`1k`,
//!   `16k`, `256k` encoded) for up to a time budget, then `sync` must report them
//!   durable. payloads/s and MB/s from the first payload queued to that `sync`'s return.
//! - `raw/MODE/SIZE`: the physical reference: the same records (the spool's 36-byte
//!   header plus the payload's bytes), written one `pwrite` each to one file in the same
//!   directory, with `fdatasync` after each record (`per-record`, the reference of
//!   `every-append`), every 100 ms from a second thread while the writer goes on
//!   (`per-100ms`, of `interval`), or once at the end (`at-end`, of `os`, whose `sync`
//!   also ends with one).
//! - `replay/SIZE`: a spool of N payloads left by a sender that shut down with the
//!   collector away, its files synced and dropped from the page cache
//!   (`POSIX_FADV_DONTNEED`); a new sender on the directory delivers them to the sink
//!   process on loopback. From `LogSender::new` until `flush` reports all delivered.
//! - `cpu/memory/SIZE`, `cpu/spool/SIZE`: the same workload (pre-built payloads through 4
//!   workers to the sink process until `flush` reports all delivered) without and with
//!   a spool (default sync); the client's CPU time per payload
//!   (`CLOCK_PROCESS_CPUTIME_ID`: every thread, user and system).
//!
//! One binary, several roles (as the throughput bench): the parent runs every selected
//! row in a fresh process (`__row NAME PORT`), rep-major, against one long-lived sink
//! process (`__sink`, the throughput bench's), and prints the tables. The spool's files
//! go under `target/bench/spool-work/` (`LOGSENDER_BENCH_SPOOL_DIR` to choose another
//! directory: the disk under test; `/tmp` is often a tmpfs).
//!
//! Settings: `LOGSENDER_BENCH_REPS` (default 5), `LOGSENDER_BENCH_SCALE` (multiplies the
//! payload counts and the time budgets; `LOGSENDER_BENCH_REPS=1 LOGSENDER_BENCH_SCALE=0.2`
//! is a quick check), `LOGSENDER_BENCH_FILTER`.

#[path = "common/generate.rs"]
mod generate;
#[allow(dead_code)]
#[path = "common/otlp_sink.rs"]
mod otlp_sink;
#[path = "common/output.rs"]
mod output;
#[allow(dead_code)]
#[path = "throughput/procfs.rs"]
mod procfs;
#[allow(dead_code)]
#[path = "throughput/protocol.rs"]
mod protocol;
#[path = "common/rng.rs"]
mod rng;
#[allow(dead_code)]
#[path = "common/roles.rs"]
mod roles;
#[allow(dead_code)]
#[path = "throughput/sink.rs"]
mod sink;
#[allow(dead_code)]
#[path = "throughput/stats.rs"]
mod stats;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logsender::crossbeam_channel::{self, RecvTimeoutError};
use logsender::{wire, Compression, Config, LogPayload, LogSender, SpoolSync};

use output::{
    fmt_lat, fmt_rate, json_num, json_nums, json_sample, json_str, json_summary, with_iqr,
    write_bench_files,
};
use procfs::cpu_secs;
use roles::{print_result, run_child, scale, scaled, watchdog, Sample};
use sink::SinkProcess;
use stats::Summary;

/// Workers of every sender here (as the throughput bench's `at-least-once/4`).
const WORKERS: usize = 4;
/// The worker queue's capacity (as the throughput bench's).
const QUEUE_CAP: usize = 1024;
/// Bytes of a spool record before the payload's (`src/spool/record.rs`, `HEADER`).
const RECORD_HEADER: usize = 36;
/// The spool's default sync interval, and the raw reference's.
const INTERVAL: Duration = Duration::from_millis(100);
/// Distinct payloads cycled through per size.
const TEMPLATES: usize = 8;

// ---------------------------------------------------------------------------------------
// Rows.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Size {
    K1,
    K16,
    K256,
}

impl Size {
    const ALL: [Size; 3] = [Size::K1, Size::K16, Size::K256];

    fn name(self) -> &'static str {
        match self {
            Size::K1 => "1k",
            Size::K16 => "16k",
            Size::K256 => "256k",
        }
    }

    /// The encoded size aimed at.
    fn target(self) -> usize {
        match self {
            Size::K1 => 1 << 10,
            Size::K16 => 16 << 10,
            Size::K256 => 256 << 10,
        }
    }

    /// Payloads per row (× SCALE): about 16 / 32 / 40 MiB. The append and raw rows stop
    /// queuing at their time budget if the disk is slower.
    fn count(self) -> usize {
        match self {
            Size::K1 => 16_000,
            Size::K16 => 2_000,
            Size::K256 => 160,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Policy {
    EveryAppend,
    Interval,
    Os,
}

impl Policy {
    const ALL: [Policy; 3] = [Policy::EveryAppend, Policy::Interval, Policy::Os];

    fn name(self) -> &'static str {
        match self {
            Policy::EveryAppend => "every-append",
            Policy::Interval => "interval",
            Policy::Os => "os",
        }
    }

    fn sync(self) -> SpoolSync {
        match self {
            Policy::EveryAppend => SpoolSync::EveryAppend,
            Policy::Interval => SpoolSync::Interval(INTERVAL),
            Policy::Os => SpoolSync::Os,
        }
    }

    /// The raw reference of the same durability.
    fn raw(self) -> RawSync {
        match self {
            Policy::EveryAppend => RawSync::PerRecord,
            Policy::Interval => RawSync::Per100ms,
            Policy::Os => RawSync::AtEnd,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RawSync {
    PerRecord,
    Per100ms,
    AtEnd,
}

impl RawSync {
    const ALL: [RawSync; 3] = [RawSync::PerRecord, RawSync::Per100ms, RawSync::AtEnd];

    fn name(self) -> &'static str {
        match self {
            RawSync::PerRecord => "per-record",
            RawSync::Per100ms => "per-100ms",
            RawSync::AtEnd => "at-end",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            RawSync::PerRecord => "fdatasync per record",
            RawSync::Per100ms => "fdatasync every 100 ms",
            RawSync::AtEnd => "one fdatasync at the end",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Append(Policy, Size),
    Raw(RawSync, Size),
    Replay(Size),
    /// `true`: with a spool.
    Cpu(bool, Size),
}

impl Kind {
    fn all() -> Vec<Kind> {
        let mut all = Vec::new();
        for size in Size::ALL {
            for p in Policy::ALL {
                all.push(Kind::Append(p, size));
            }
            for r in RawSync::ALL {
                all.push(Kind::Raw(r, size));
            }
        }
        all.extend(Size::ALL.map(Kind::Replay));
        for size in Size::ALL {
            all.push(Kind::Cpu(false, size));
            all.push(Kind::Cpu(true, size));
        }
        all
    }

    fn name(self) -> String {
        match self {
            Kind::Append(p, s) => format!("append/{}/{}", p.name(), s.name()),
            Kind::Raw(r, s) => format!("raw/{}/{}", r.name(), s.name()),
            Kind::Replay(s) => format!("replay/{}", s.name()),
            Kind::Cpu(spool, s) => {
                format!(
                    "cpu/{}/{}",
                    if spool { "spool" } else { "memory" },
                    s.name()
                )
            }
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        Kind::all().into_iter().find(|k| k.name() == name)
    }

    /// Whether it sends to the sink process.
    fn needs_sink(self) -> bool {
        matches!(self, Kind::Replay(_) | Kind::Cpu(..))
    }
}

/// One row and its repetitions.
struct Task {
    kind: Kind,
    reps: Vec<Sample>,
}

impl Task {
    fn summary(&self, key: &str) -> Summary {
        let v: Vec<f64> = self.reps.iter().map(|s| get(s, key)).collect();
        Summary::of(&v)
    }

    fn med(&self, key: &str) -> f64 {
        self.summary(key).median
    }
}

fn get(s: &Sample, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------
// The parent.
// ---------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__sink") => sink::sink_main(&args[1..]),
        Some("__row") => row_main(&args[1..]),
        _ => parent_main(&args),
    }
}

fn parent_main(args: &[String]) {
    let reps = roles::reps();
    let filter = roles::filter(args);
    let mut tasks: Vec<Task> = Kind::all()
        .into_iter()
        .filter(|k| roles::selects(&filter, &k.name()))
        .map(|kind| Task {
            kind,
            reps: Vec::new(),
        })
        .collect();
    if tasks.is_empty() {
        eprintln!("bench: the filter selects no spool task");
        return;
    }
    let work = work_root();
    eprintln!(
        "bench: spool: {} tasks x {reps} reps after a warm-up, in {} ({}) \
         (LOGSENDER_BENCH_FILTER={filter:?}, LOGSENDER_BENCH_SCALE={})",
        tasks.len(),
        work.display(),
        fs_kind(&work),
        scale()
    );
    let began = Instant::now();
    let mut sink = tasks
        .iter()
        .any(|t| t.kind.needs_sink())
        .then(|| SinkProcess::spawn(0));
    // Warm-up (not counted): the first selected row of each group, once.
    let mut warmed: Vec<std::mem::Discriminant<Kind>> = Vec::new();
    for task in &tasks {
        let d = std::mem::discriminant(&task.kind);
        if !warmed.contains(&d) {
            warmed.push(d);
            let _ = run_row(task.kind, sink.as_mut());
        }
    }
    let warmup_s = began.elapsed().as_secs_f64();
    eprintln!("bench: warm-up: {} rows, {warmup_s:.1} s", warmed.len());
    let mut rep_s = Vec::new();
    for rep in 0..reps {
        let rep_began = Instant::now();
        for task in &mut tasks {
            if let Some(sample) = run_row(task.kind, sink.as_mut()) {
                eprintln!(
                    "bench: rep {}/{reps} {:<24} {}",
                    rep + 1,
                    task.kind.name(),
                    progress(&sample)
                );
                task.reps.push(sample);
            }
        }
        rep_s.push(rep_began.elapsed().as_secs_f64());
    }
    drop(sink);
    let elapsed_s = began.elapsed().as_secs_f64();
    println!("{}", tables(&tasks, reps, elapsed_s));
    write_json(&tasks, reps, &filter, warmup_s, &rep_s, elapsed_s);
}

/// One repetition of `kind` in a fresh process; the sink's counts around it for the rows
/// that send, with a warning unless it received exactly what the row delivered.
fn run_row(kind: Kind, sink: Option<&mut SinkProcess>) -> Option<Sample> {
    let port = sink.as_ref().map_or(0, |s| s.gosight_port());
    let args = ["__row".to_string(), kind.name(), port.to_string()];
    match sink {
        Some(sink) if kind.needs_sink() => {
            let before = sink.snapshot();
            let mut s = run_child(&args)?;
            let after = sink.snapshot();
            let messages = after.messages - before.messages;
            if messages as f64 != get(&s, "n") {
                eprintln!(
                    "bench: WARNING {}: the sink counted {messages} messages, the row delivered {}",
                    kind.name(),
                    get(&s, "n")
                );
            }
            s.insert("sink_messages".into(), messages as f64);
            Some(s)
        }
        _ => run_child(&args),
    }
}

fn progress(s: &Sample) -> String {
    format!(
        "{:>8} payloads/s {:>8.1} MB/s  cpu {:>6} µs/payload  n {} ({:.2} s)",
        fmt_rate(get(s, "payloads_per_s")),
        get(s, "mb_per_s"),
        fmt_lat(get(s, "cpu_us")),
        get(s, "n"),
        get(s, "secs")
    )
}

// ---------------------------------------------------------------------------------------
// A row (the child).
// ---------------------------------------------------------------------------------------

fn row_main(args: &[String]) {
    let [name, port, ..] = args else {
        panic!("usage: __row NAME PORT");
    };
    let kind = Kind::parse(name).unwrap_or_else(|| panic!("no row {name}"));
    let port: u16 = port.parse().expect("port");
    watchdog(Duration::from_secs(170));
    let dir = work_root().join(format!("{}-{}", std::process::id(), name.replace('/', "-")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the work directory");
    let result = match kind {
        Kind::Append(policy, size) => append_row(&dir, policy, size),
        Kind::Raw(mode, size) => raw_row(&dir, mode, size),
        Kind::Replay(size) => replay_row(&dir, size, port),
        Kind::Cpu(spool, size) => cpu_row(&dir, spool, size, port),
    };
    let _ = std::fs::remove_dir_all(&dir);
    print_result(&result);
}

/// The payload templates of `size`: entries chosen so that the encoded size is close to
/// the target, with their encoded lengths.
fn templates(size: Size) -> (Vec<LogPayload>, Vec<usize>) {
    let len = |entries: usize| wire::encode(&generate::payload(entries, 0)).len();
    let base = len(0);
    let per = (len(64) - base) as f64 / 64.0;
    let entries = (((size.target() as f64 - base as f64) / per).round() as usize).max(1);
    let templates: Vec<LogPayload> = (0..TEMPLATES)
        .map(|v| generate::payload(entries, v))
        .collect();
    let lens = templates.iter().map(|p| wire::encode(p).len()).collect();
    (templates, lens)
}

/// `n` payloads cycled from `templates`, built before the measured window.
fn prebuild(templates: &[LogPayload], n: usize) -> Vec<LogPayload> {
    (0..n)
        .map(|i| templates[i % templates.len()].clone())
        .collect()
}

/// The time budget of the append and raw rows (× SCALE).
fn budget() -> Duration {
    Duration::from_secs_f64((1.0 * scale()).max(0.05))
}

/// A sender config for loopback with the throughput bench's settings (uncompressed).
fn config(port: u16) -> logsender::ConfigBuilder {
    Config::builder(format!("127.0.0.1:{port}"))
        .plaintext()
        .compression(Compression::None)
}

/// A port nothing listens on: the collector that is down.
fn down_port() -> u16 {
    roles::free_port()
}

fn sender_with_pool(config: Config) -> (LogSender, crossbeam_channel::Sender<LogPayload>) {
    let sender = LogSender::new(config).expect("sender");
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_CAP);
    sender.start_worker_pool(rx, WORKERS).expect("workers");
    (sender, tx)
}

fn per_payload_us(secs: f64, n: usize) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        secs * 1e6 / n as f64
    }
}

fn append_row(dir: &Path, policy: Policy, size: Size) -> Vec<(&'static str, f64)> {
    let (templates, lens) = templates(size);
    let items = prebuild(&templates, scaled(size.count()));
    let config = config(down_port())
        .spool(dir)
        .spool_sync(policy.sync())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config);
    let budget = budget();
    let mut items = items.into_iter();
    let (mut n, mut bytes) = (0usize, 0usize);
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    while t0.elapsed() < budget {
        let Some(p) = items.next() else { break };
        tx.send(p).expect("queue");
        bytes += lens[n % lens.len()];
        n += 1;
    }
    let d = sender.sync(Duration::from_secs(120)).expect("sync");
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    drop(items);
    assert!(d.durable, "not durable: {d:?}");
    assert_eq!(d.spooled, n as u64, "{d:?}");
    let spool_bytes = sender.stats().spool_bytes;
    drop(tx);
    let _ = sender.shutdown(Duration::from_millis(200));
    vec![
        ("n", n as f64),
        ("secs", secs),
        ("payload_bytes", bytes as f64 / n.max(1) as f64),
        ("payloads_per_s", n as f64 / secs),
        ("mb_per_s", bytes as f64 / secs / 1e6),
        ("cpu_us", per_payload_us(cpu, n)),
        ("spool_bytes", spool_bytes as f64),
    ]
}

fn raw_row(dir: &Path, mode: RawSync, size: Size) -> Vec<(&'static str, f64)> {
    let (templates, _) = templates(size);
    // The spool's records: a header (its length field filled, the rest as good as any
    // bytes for the disk) and the payload's bytes.
    let records: Vec<Vec<u8>> = templates
        .iter()
        .map(|p| {
            let body = wire::encode(p);
            let mut r = vec![0u8; RECORD_HEADER];
            r[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
            r.extend_from_slice(&body);
            r
        })
        .collect();
    let path = dir.join("raw.seg");
    let file = Arc::new(
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .expect("raw file"),
    );
    // The file's name durable before the clock starts.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("sync dir");
    let count = scaled(size.count());
    let budget = budget();
    let syncs = Arc::new(AtomicU64::new(0));
    // The interval's syncs, on a thread of their own as the spool thread's; dropping
    // `stop` ends it at once (the writer then syncs the rest).
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let syncer = (mode == RawSync::Per100ms).then(|| {
        let (file, syncs) = (file.clone(), syncs.clone());
        std::thread::spawn(move || {
            let mut next = Instant::now() + INTERVAL;
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_deadline(next) {
                file.sync_data().expect("fdatasync");
                syncs.fetch_add(1, Relaxed);
                next += INTERVAL;
            }
        })
    });
    let (mut n, mut offset, mut bytes) = (0usize, 0u64, 0usize);
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    while n < count && t0.elapsed() < budget {
        let r = &records[n % records.len()];
        file.write_all_at(r, offset).expect("write");
        offset += r.len() as u64;
        bytes += r.len() - RECORD_HEADER;
        n += 1;
        if mode == RawSync::PerRecord {
            file.sync_data().expect("fdatasync");
            syncs.fetch_add(1, Relaxed);
        }
    }
    drop(stop);
    if let Some(syncer) = syncer {
        syncer.join().expect("syncer");
    }
    if mode != RawSync::PerRecord {
        file.sync_data().expect("fdatasync");
        syncs.fetch_add(1, Relaxed);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    vec![
        ("n", n as f64),
        ("secs", secs),
        ("payload_bytes", bytes as f64 / n.max(1) as f64),
        ("payloads_per_s", n as f64 / secs),
        ("mb_per_s", bytes as f64 / secs / 1e6),
        ("cpu_us", per_payload_us(cpu, n)),
        ("syncs", syncs.load(Relaxed) as f64),
    ]
}

fn replay_row(dir: &Path, size: Size, port: u16) -> Vec<(&'static str, f64)> {
    let (templates, lens) = templates(size);
    let n = scaled(size.count());
    // Fill (not timed): the collector away, a shutdown leaves everything in the spool.
    {
        let config = config(down_port())
            .spool(dir)
            .spool_sync(SpoolSync::Os)
            .build()
            .expect("config");
        let (sender, tx) = sender_with_pool(config);
        for i in 0..n {
            tx.send(templates[i % templates.len()].clone())
                .expect("queue");
        }
        let d = sender.sync(Duration::from_secs(120)).expect("sync");
        assert!(d.durable && d.spooled == n as u64, "{d:?}");
        drop(tx);
        let done = sender.shutdown(Duration::from_millis(200));
        assert_eq!(done.report.left_in_spool, n as u64, "{:?}", done.report);
    }
    let spool_bytes = evict(dir);
    let bytes: usize = (0..n).map(|i| lens[i % lens.len()]).sum();
    let config = config(port).spool(dir).build().expect("config");
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let sender = LogSender::new(config).expect("sender");
    let started_ms = t0.elapsed().as_secs_f64() * 1e3;
    let report = sender.flush(Duration::from_secs(120));
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    assert!(report.all_delivered(), "{report:?}");
    let stats = sender.stats();
    assert_eq!(stats.replayed, n as u64, "{stats:?}");
    let _ = sender.shutdown(Duration::from_secs(5));
    vec![
        ("n", n as f64),
        ("secs", secs),
        ("payload_bytes", bytes as f64 / n as f64),
        ("payloads_per_s", n as f64 / secs),
        ("mb_per_s", bytes as f64 / secs / 1e6),
        ("cpu_us", per_payload_us(cpu, n)),
        ("startup_ms", started_ms),
        ("spool_bytes", spool_bytes as f64),
    ]
}

fn cpu_row(dir: &Path, spool: bool, size: Size, port: u16) -> Vec<(&'static str, f64)> {
    let (templates, lens) = templates(size);
    let n = scaled(size.count());
    let items = prebuild(&templates, n);
    let mut config = config(port);
    if spool {
        config = config.spool(dir);
    }
    let (sender, tx) = sender_with_pool(config.build().expect("config"));
    // Connected before the clock starts, as in the throughput bench.
    let _ = sender.wait_connected(Duration::from_secs(10));
    let bytes: usize = (0..n).map(|i| lens[i % lens.len()]).sum();
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    for p in items {
        tx.send(p).expect("queue");
    }
    let report = sender.flush(Duration::from_secs(120));
    let secs = t0.elapsed().as_secs_f64();
    assert!(report.all_delivered(), "{report:?}");
    let spooled = sender.stats().spooled;
    drop(tx);
    // CPU up to the end of the shutdown: the spool's releases of the last acknowledged
    // records (and its segment removals) count too; the same shutdown for both rows.
    let _ = sender.shutdown(Duration::from_secs(5));
    let cpu = cpu_secs() - cpu0;
    vec![
        ("n", n as f64),
        ("secs", secs),
        ("payload_bytes", bytes as f64 / n as f64),
        ("payloads_per_s", n as f64 / secs),
        ("mb_per_s", bytes as f64 / secs / 1e6),
        ("cpu_us", per_payload_us(cpu, n)),
        ("spooled", spooled as f64),
    ]
}

/// Syncs every file in `dir` and drops it from the page cache, so that a replay reads
/// from the disk as after a reboot; returns their bytes.
fn evict(dir: &Path) -> u64 {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).expect("read spool dir").flatten() {
        let Ok(file) = File::open(entry.path()) else {
            continue;
        };
        let _ = file.sync_data();
        bytes += file.metadata().map_or(0, |m| m.len());
        // SAFETY: a valid open descriptor; advice only, no memory is touched.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
    bytes
}

/// Where the rows put their files: `LOGSENDER_BENCH_SPOOL_DIR`, else
/// `target/bench/spool-work` (next to the binary's target dir).
fn work_root() -> PathBuf {
    std::env::var_os("LOGSENDER_BENCH_SPOOL_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.ancestors().nth(3).map(|t| t.join("bench/spool-work")))
        })
        .unwrap_or_else(|| "target/bench/spool-work".into())
}

/// The file system type of `path` (or of its nearest existing ancestor).
fn fs_kind(path: &Path) -> &'static str {
    let _ = std::fs::create_dir_all(path);
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return "?";
    };
    // SAFETY: statfs is plain integers (all-zero is valid); `c` is a valid C string and
    // statfs writes at most one struct into `st`.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "?";
    }
    match st.f_type {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs: fdatasync is free here, not a disk",
        0x794C_7630 => "overlayfs",
        _ => "other",
    }
}

// ---------------------------------------------------------------------------------------
// Output.
// ---------------------------------------------------------------------------------------

fn find(tasks: &[Task], kind: Kind) -> Option<&Task> {
    tasks.iter().find(|t| t.kind == kind && !t.reps.is_empty())
}

fn kb(task: &Task) -> String {
    format!("{:.1} KB", task.med("payload_bytes") / 1e3)
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

fn tables(tasks: &[Task], reps: usize, elapsed_s: f64) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "## Spool ({reps} reps; median (IQR); {:.0} s in all)\n",
        elapsed_s
    ));
    line("**Append** (collector down: every payload to disk; 4 workers; until `sync` reports durable) against **the raw disk** (the same records, one `pwrite` each, one file):\n".into());
    line("| size | sync | payloads/s | MB/s | CPU µs/payload | raw reference | raw records/s | raw MB/s | spool ÷ raw |".into());
    line("|---|---|---:|---:|---:|---|---:|---:|---:|".into());
    for size in Size::ALL {
        for policy in Policy::ALL {
            let app = find(tasks, Kind::Append(policy, size));
            let raw = find(tasks, Kind::Raw(policy.raw(), size));
            if app.is_none() && raw.is_none() {
                continue;
            }
            let cell = |t: Option<&Task>, key: &str, fmt: fn(f64) -> String| {
                t.map_or("–".into(), |t| with_iqr(t.summary(key), fmt))
            };
            let mb = |v: f64| format!("{v:.1}");
            line(format!(
                "| {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
                size.name(),
                app.or(raw).map_or("?".into(), kb),
                policy.name(),
                cell(app, "payloads_per_s", fmt_rate),
                cell(app, "mb_per_s", mb),
                cell(app, "cpu_us", fmt_lat),
                policy.raw().describe(),
                cell(raw, "payloads_per_s", fmt_rate),
                cell(raw, "mb_per_s", mb),
                ratio(
                    app.map_or(f64::NAN, |t| t.med("payloads_per_s")),
                    raw.map_or(f64::NAN, |t| t.med("payloads_per_s"))
                ),
            ));
        }
    }
    let replays: Vec<&Task> = Size::ALL
        .iter()
        .filter_map(|s| find(tasks, Kind::Replay(*s)))
        .collect();
    if !replays.is_empty() {
        line("\n**Replay** (a restart on a spool of N payloads, its files out of the page cache, delivering to the sink process on loopback; from `LogSender::new` until `flush` reports all delivered):\n".into());
        line(
            "| size | payloads | payloads/s | MB/s | `LogSender::new` ms | client CPU µs/payload |"
                .into(),
        );
        line("|---|---:|---:|---:|---:|---:|".into());
        for t in replays {
            let Kind::Replay(size) = t.kind else { continue };
            line(format!(
                "| {} ({}) | {} | {} | {} | {} | {} |",
                size.name(),
                kb(t),
                fmt_rate(t.med("n")),
                with_iqr(t.summary("payloads_per_s"), fmt_rate),
                with_iqr(t.summary("mb_per_s"), |v| format!("{v:.1}")),
                with_iqr(t.summary("startup_ms"), fmt_lat),
                with_iqr(t.summary("cpu_us"), fmt_lat),
            ));
        }
    }
    let any_cpu = Size::ALL.iter().any(|s| {
        find(tasks, Kind::Cpu(false, *s))
            .or(find(tasks, Kind::Cpu(true, *s)))
            .is_some()
    });
    if any_cpu {
        line("\n**Client CPU with and without a spool** (collector up; the same pre-built payloads through 4 workers until `flush` reports all delivered; spool synced every 100 ms):\n".into());
        line("| size | payloads | without: payloads/s | without: CPU µs/payload | with spool: payloads/s | with spool: CPU µs/payload | CPU with ÷ without |".into());
        line("|---|---:|---:|---:|---:|---:|---:|".into());
        for size in Size::ALL {
            let mem = find(tasks, Kind::Cpu(false, size));
            let sp = find(tasks, Kind::Cpu(true, size));
            let Some(any) = mem.or(sp) else { continue };
            let cell = |t: Option<&Task>, key: &str, fmt: fn(f64) -> String| {
                t.map_or("–".into(), |t| with_iqr(t.summary(key), fmt))
            };
            line(format!(
                "| {} ({}) | {} | {} | {} | {} | {} | {} |",
                size.name(),
                kb(any),
                fmt_rate(any.med("n")),
                cell(mem, "payloads_per_s", fmt_rate),
                cell(mem, "cpu_us", fmt_lat),
                cell(sp, "payloads_per_s", fmt_rate),
                cell(sp, "cpu_us", fmt_lat),
                ratio(
                    sp.map_or(f64::NAN, |t| t.med("cpu_us")),
                    mem.map_or(f64::NAN, |t| t.med("cpu_us"))
                ),
            ));
        }
    }
    out
}

fn write_json(
    tasks: &[Task],
    reps: usize,
    filter: &str,
    warmup_s: f64,
    rep_s: &[f64],
    elapsed_s: f64,
) {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let work = work_root();
    let rows: Vec<String> = tasks
        .iter()
        .map(|t| {
            let reps: Vec<String> = t.reps.iter().map(json_sample).collect();
            format!(
                "    {{\"name\": {}, \"summary\": {}, \"reps\": [{}]}}",
                json_str(&t.kind.name()),
                json_summary(&t.reps),
                reps.join(", ")
            )
        })
        .collect();
    let json = format!(
        "{{\n  \"unix_time\": {unix},\n  \"cores\": {cores},\n  \"reps\": {reps},\n  \
         \"scale\": {},\n  \"filter\": {},\n  \"work_dir\": {},\n  \"fs\": {},\n  \
         \"budget_s\": {},\n  \"warmup_s\": {},\n  \"rep_s\": [{}],\n  \"elapsed_s\": {},\n  \
         \"workers\": {WORKERS},\n  \"queue_capacity\": {QUEUE_CAP},\n  \"tasks\": [\n{}\n  ]\n}}\n",
        json_num(scale()),
        json_str(filter),
        json_str(&work.display().to_string()),
        json_str(fs_kind(&work)),
        json_num(budget().as_secs_f64()),
        json_num(warmup_s),
        json_nums(rep_s),
        json_num(elapsed_s),
        rows.join(",\n"),
    );
    write_bench_files(
        &[
            format!("spool-{unix}.json"),
            "spool-latest.json".to_string(),
        ],
        &json,
    );
}
