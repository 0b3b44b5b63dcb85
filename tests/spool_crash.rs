//! The disk spool end to end, against crashes, at scale and against damage (issue 15).
//!
//! - A child process shipping into one spool directory is SIGKILLed again and again, at
//!   random moments (seeded; the seed is printed), in three phases, each proven hit from
//!   what the child printed just before it died: while it appends with the collector
//!   away, while it releases what a real collector acknowledges, and while it replays
//!   what its predecessors left. A last child drains the directory: everything a child
//!   was told was durable arrives, and the directory is empty again.
//! - A drain of a large spool under small memory bounds peaks at no more memory than
//!   the same sender shipping the same payloads from memory, plus the bounds.
//! - Damaged spool files under a real sender: flipped bytes, a segment cut short, one
//!   overwritten with garbage, one deleted before the start and one while it runs: each
//!   reported with its file and offset, everything intact delivered, nothing damaged.
//! - A clean shutdown after appends leaves nothing to be sent again by the next sender.

mod support;

#[path = "../benches/common/rng.rs"]
mod rng;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logsender::{ConfigBuilder, EventHandler, LogPayload, LogSender, SpoolEvent, SpoolSync};
use rng::Rng;
use support::helpers::{
    assert_at_least_once, child_args, free_port, run_child, temp_path, unserved_addr, wait_until,
    ChildLine,
};
use support::sink::{Ending, Sink};
use support::{fast_config, id_of, payload, queue, sender_with_pool};

/// Set in a child process: `kind,key=value,... collector-address`.
const CHILD: &str = "LOGSENDER_SPOOL_CRASH_CHILD";

/// The test this binary runs as a child.
const CHILD_TEST: &str = "spool_crash_child";

/// A child's settings, `kind,key=value,...` (no spaces: see `child_args`).
struct Args {
    kind: String,
    values: HashMap<String, String>,
}

impl Args {
    fn parse(mode: &str) -> Args {
        let mut parts = mode.split(',');
        let kind = parts.next().unwrap_or_default().to_string();
        let values = parts
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Args { kind, values }
    }

    fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("child argument {key} missing"))
    }

    fn num(&self, key: &str) -> u64 {
        self.get(key).parse().expect("a number")
    }
}

/// The entry point of the child processes: a no-op unless [`CHILD`] is set.
#[test]
fn spool_crash_child() {
    let Some((mode, addr)) = child_args(CHILD) else {
        return;
    };
    let args = Args::parse(&mode);
    match args.kind.as_str() {
        "ship" => ship(&args, &addr),
        "drain" => drain(&args, &addr),
        "build" => build_large(&args, &addr),
        "replay" => replay_large(&args, &addr),
        "baseline" => baseline(&args, &addr),
        other => panic!("unknown child kind {other}"),
    }
}

/// Prints what the spool reports, for the parent to read; keeps the backlog the
/// sender started with.
#[derive(Default)]
struct Printer {
    backlog: AtomicU64,
}

impl EventHandler for Printer {
    fn on_spool(&self, event: &SpoolEvent) {
        match event {
            SpoolEvent::Replaying { payloads, .. } => {
                self.backlog.store(*payloads, Ordering::SeqCst);
                println!("REPLAYING payloads={payloads}");
            }
            SpoolEvent::Corrupt { path, offset, len } => {
                // -1: the file is gone already (a segment with nothing intact in it is
                // removed at start-up).
                let file_len = std::fs::metadata(path).map_or(-1, |m| m.len() as i64);
                println!(
                    "CORRUPT path={} offset={offset} len={len} file_len={file_len}",
                    path.display()
                );
            }
            SpoolEvent::Io { path, error, .. } => {
                println!("SPOOLIO path={} error={error}", path.display());
            }
            _ => {}
        }
    }
}

/// The crash loop's child: ships numbered payloads of its own `producer` into the spool
/// (16 at a time, then `sync`), prints `DURABLE p=.. n=..` after each `sync` that says
/// durable (the first `n` are), and a `STATS` line every 5 ms. Runs until killed.
fn ship(args: &Args, addr: &str) {
    let producer = args.num("producer") as usize;
    let sync = match args.get("sync") {
        "every" => SpoolSync::EveryAppend,
        "interval" => SpoolSync::Interval(Duration::from_millis(10)),
        _ => SpoolSync::Os,
    };
    let printer = Arc::new(Printer::default());
    let config = fast_config(addr)
        .max_buffered_payloads(20)
        .spool(args.get("dir"))
        .spool_sync(sync)
        .spool_segment_bytes(64 << 10)
        .event_handler(printer.clone())
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 64, 2);
    let sender = Arc::new(sender);
    {
        let sender = sender.clone();
        std::thread::spawn(move || loop {
            let s = sender.stats();
            println!(
                "STATS taken={} spooled={} replayed={} acked={} backlog={} corrupt={} io={} handler_panics={}",
                s.enqueued,
                s.spooled,
                s.replayed,
                s.acknowledged,
                printer.backlog.load(Ordering::SeqCst),
                s.spool_corrupt,
                s.spool_io_errors,
                s.handler_panics
            );
            std::thread::sleep(Duration::from_millis(5));
        });
    }
    let mut seq = 0;
    loop {
        for _ in 0..16 {
            tx.send(payload(producer, seq)).unwrap();
            seq += 1;
        }
        let d = sender.sync(Duration::from_secs(10)).unwrap();
        if d.durable {
            println!("DURABLE p={producer} n={seq}");
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// The crash loop's last child: sends everything the spool holds, then shuts down.
fn drain(args: &Args, addr: &str) {
    let printer = Arc::new(Printer::default());
    let config = fast_config(addr)
        .max_buffered_payloads(2_000)
        .spool(args.get("dir"))
        .event_handler(printer.clone())
        .build()
        .unwrap();
    let sender = LogSender::new(config).unwrap();
    let report = sender.flush(Duration::from_secs(60));
    let s = sender.stats();
    println!(
        "DRAINED all_delivered={} outstanding={} backlog={} replayed={} acked={} corrupt={} io={} handler_panics={}",
        report.all_delivered(),
        report.outstanding,
        printer.backlog.load(Ordering::SeqCst),
        s.replayed,
        s.acknowledged,
        s.spool_corrupt,
        s.spool_io_errors,
        s.handler_panics
    );
    let done = sender.shutdown(Duration::from_secs(5));
    println!(
        "CLOSED all_delivered={} left_in_spool={}",
        done.report.all_delivered(),
        done.report.left_in_spool
    );
}

/// The phases of the crash loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    /// The collector is away: the child appends to the spool.
    Append,
    /// The collector acknowledges: the child releases acknowledged records while it
    /// still holds others.
    Release,
    /// A slow collector: the child replays what earlier children left.
    Replay,
}

/// A `STATS` line of a `ship` child.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    taken: u64,
    spooled: u64,
    replayed: u64,
    acked: u64,
    backlog: u64,
    handler_panics: u64,
}

impl Seen {
    fn parse(line: &str) -> Option<Seen> {
        let (_, rest) = line.split_once("STATS ")?;
        let l = ChildLine(rest.to_string());
        Some(Seen {
            taken: l.number("taken"),
            spooled: l.number("spooled"),
            replayed: l.number("replayed"),
            acked: l.number("acked"),
            backlog: l.number("backlog"),
            handler_panics: l.number("handler_panics"),
        })
    }
}

/// Whether the child was in `phase` at the last of its `STATS` lines `seen`.
fn in_phase(phase: Phase, seen: &[Seen]) -> bool {
    let Some(last) = seen.last() else {
        return false;
    };
    // About 20 ms before it (lines come every 5 ms).
    let before = seen[seen.len().saturating_sub(5)];
    match phase {
        // Nothing acknowledged (the collector is away), payloads in the spool, and
        // payloads still being taken in (appended).
        Phase::Append => last.acked == 0 && last.spooled > 0 && last.taken > before.taken,
        // Acknowledgements coming in (releases), payloads still in the spool.
        Phase::Release => last.acked > before.acked && last.spooled > 0,
        // Some of the backlog read back, not all of it.
        Phase::Replay => last.backlog > 0 && last.replayed > 0 && last.replayed < last.backlog,
    }
}

/// What one killed child printed.
#[derive(Default)]
struct Round {
    seen: Vec<Seen>,
    /// Its payloads `0..durable` were reported durable.
    durable: u64,
    corrupt: Vec<String>,
    spool_io: Vec<String>,
}

impl Round {
    fn take(&mut self, line: &str) {
        if let Some(s) = Seen::parse(line) {
            self.seen.push(s);
        } else if let Some((_, rest)) = line.split_once("DURABLE ") {
            self.durable = self.durable.max(ChildLine(rest.into()).number("n"));
        } else if let Some((_, rest)) = line.split_once("CORRUPT ") {
            self.corrupt.push(rest.to_string());
        } else if let Some((_, rest)) = line.split_once("SPOOLIO ") {
            self.spool_io.push(rest.to_string());
        }
    }
}

/// Runs a `ship` child and SIGKILLs it once `want` of its `STATS` lines showed it in
/// `phase` (then `delay` more), or at `give_up` (a miss), or as soon as `phase` can no
/// longer come (a replay with nothing, or nothing more, to replay). Returns what it
/// printed up to its death.
fn crash_round(
    mode: &str,
    addr: &str,
    phase: Phase,
    want: u64,
    delay: Duration,
    give_up: Duration,
) -> Round {
    let stderr_path = temp_path("spool-crash-stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{mode} {addr}"))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut round = Round::default();
    let deadline = Instant::now() + give_up;
    let mut qualified = 0;
    let mut died = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let stats = line.contains("STATS ");
                round.take(&line);
                if !stats {
                    continue;
                }
                if in_phase(phase, &round.seen) {
                    qualified += 1;
                    if qualified >= want {
                        break;
                    }
                }
                let last = round.seen[round.seen.len() - 1];
                let no_more_replay =
                    phase == Phase::Replay && (last.backlog == 0 || last.replayed >= last.backlog);
                if no_more_replay && round.seen.len() > 3 {
                    break;
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                died = true;
                break;
            }
        }
    }
    if !died {
        std::thread::sleep(delay);
        // SIGKILL: no goodbye, no shutdown.
        child.kill().unwrap();
    }
    let status = child.wait().unwrap();
    // What it printed before it died.
    for line in rx.iter() {
        round.take(&line);
    }
    reader.join().unwrap();
    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    assert!(
        !died,
        "the child ended by itself ({status:?}) in phase {phase:?}:\n{err}"
    );
    assert!(!err.contains("panicked"), "a child panicked:\n{err}");
    round
}

/// The seed of a randomized test: `LOGSENDER_CRASH_SEED`, or a new one.
fn seed() -> u64 {
    let seed = std::env::var("LOGSENDER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        });
    seed.max(1) // xorshift stays at 0 from 0
}

/// The names and sizes of the files in `dir`.
fn files_in(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let len = e.metadata().map_or(0, |m| m.len());
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    files.sort();
    files
}

/// Asserts that `dir` is back to an empty spool: only the `LOCK` file, empty.
fn assert_empty_spool(dir: &Path) {
    let mut files = files_in(dir);
    // The last sender's removals happen before its shutdown returns; allow a moment
    // for a child process's exit anyway.
    if files.len() > 1 {
        wait_until(Duration::from_secs(5), || files_in(dir).len() == 1);
        files = files_in(dir);
    }
    assert_eq!(files, vec![("LOCK".to_string(), 0)], "{}", dir.display());
}

const ROUNDS_MIN: usize = 21;
const ROUNDS_MAX: usize = 36;
const HITS_PER_PHASE: u32 = 5;
const HITS_TOTAL: u32 = 20;

#[test]
fn a_child_killed_while_it_appends_releases_and_replays_loses_nothing_it_reported_durable() {
    let seed = seed();
    println!("crash loop seed {seed} (LOGSENDER_CRASH_SEED={seed} runs it again)");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let dir = temp_path("spool-crash");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut sink = Sink::start_with(port, Ending::OkNoMessage, None);
    sink.keep_payloads(false);
    // The replay phase needs a backlog: appends leave it, a slow collector keeps it.
    let cycle = [Phase::Append, Phase::Replay, Phase::Release];
    let mut hits: HashMap<Phase, u32> = HashMap::new();
    let mut kills = 0;
    let mut durable: Vec<(usize, u64)> = Vec::new();
    let mut corrupt: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    let mut round = 0;
    loop {
        let total: u32 = hits.values().sum();
        let enough = cycle
            .iter()
            .all(|p| hits.get(p).copied().unwrap_or(0) >= HITS_PER_PHASE)
            && total >= HITS_TOTAL;
        if round >= ROUNDS_MAX || (round >= ROUNDS_MIN && enough) {
            break;
        }
        let phase = cycle[round % cycle.len()];
        if sink.is_running() {
            sink.stop();
        }
        match phase {
            Phase::Append => {}
            Phase::Replay => {
                // One message read per 2 ms: the replay takes long enough to be hit.
                sink.set_ending(Ending::SlowReads(Duration::from_millis(2)));
                sink.restart();
            }
            Phase::Release => {
                sink.set_ending(Ending::OkNoMessage);
                sink.restart();
            }
        }
        let producer = 100 + round;
        let sync = ["os", "interval", "every"][rng.below(3) as usize];
        let want = match phase {
            Phase::Append => 5 + rng.below(40),
            Phase::Replay => 1 + rng.below(80),
            Phase::Release => 3 + rng.below(30),
        };
        let delay = Duration::from_micros(rng.below(4_000));
        let mode = format!("ship,dir={},producer={producer},sync={sync}", dir.display());
        let r = crash_round(&mode, &addr, phase, want, delay, Duration::from_secs(5));
        kills += 1;
        let last = r.seen.last().copied().unwrap_or_default();
        let hit = in_phase(phase, &r.seen);
        if hit {
            *hits.entry(phase).or_default() += 1;
        }
        for s in &r.seen {
            assert_eq!(s.handler_panics, 0, "round {round}");
        }
        notes.push(format!(
            "round {round:2} {phase:?} sync={sync} want={want} hit={hit} durable={} last={last:?}",
            r.durable
        ));
        durable.push((producer, r.durable));
        corrupt.extend(r.corrupt);
        round += 1;
    }
    for n in &notes {
        println!("{n}");
    }
    // Every Corrupt a child reported is a torn tail (a record cut by a kill): the end of
    // its file, and no more of them than kills.
    for c in &corrupt {
        let l = ChildLine(c.clone());
        let file_len: i64 = l.field("file_len").parse().unwrap();
        assert!(
            file_len == -1 || (l.number("offset") + l.number("len")) as i64 == file_len,
            "damage that is not a torn tail: {c}"
        );
    }
    assert!(corrupt.len() <= kills, "{corrupt:?}");

    // The collector comes back for good; a last child drains the directory.
    if sink.is_running() {
        sink.stop();
    }
    sink.set_ending(Ending::OkNoMessage);
    sink.restart();
    let (stdout, stderr, took) = run_child(
        CHILD_TEST,
        CHILD,
        &format!("drain,dir={}", dir.display()),
        &addr,
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let drained = ChildLine::find(&stdout, "DRAINED");
    let closed = ChildLine::find(&stdout, "CLOSED");
    println!("last child ({took:?}): {} / {}", drained.0, closed.0);
    assert_eq!(drained.field("all_delivered"), "true", "{stdout}");
    assert_eq!(drained.number("handler_panics"), 0);
    assert_eq!(closed.field("all_delivered"), "true", "{stdout}");
    assert_eq!(closed.number("left_in_spool"), 0);
    for line in stdout.lines().filter(|l| l.contains("CORRUPT ")) {
        let (_, c) = line.split_once("CORRUPT ").unwrap();
        let l = ChildLine(c.to_string());
        let file_len: i64 = l.field("file_len").parse().unwrap();
        assert!(
            file_len == -1 || (l.number("offset") + l.number("len")) as i64 == file_len,
            "damage that is not a torn tail: {c}"
        );
        corrupt.push(c.to_string());
    }
    assert!(corrupt.len() <= kills, "{corrupt:?}");

    // Everything reported durable arrived, in a call the collector acknowledged.
    assert_eq!(sink.bad_payloads(), 0);
    let acked = sink.ok_ids();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for id in &acked {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let mut wanted = 0u64;
    let mut lost = Vec::new();
    for (producer, n) in &durable {
        for seq in 0..*n as usize {
            wanted += 1;
            let id = id_of(&payload(*producer, seq));
            if !counts.contains_key(id.as_str()) {
                lost.push(id);
            }
        }
    }
    let duplicates: u64 = counts.values().map(|c| c - 1).sum();
    let total_hits: u32 = hits.values().sum();
    println!(
        "seed {seed}: {kills} kills, hits {hits:?} ({total_hits}); durable {wanted}, \
         acknowledged {} ({} distinct, {duplicates} duplicates); torn tails reported {}; \
         {:?} in all",
        acked.len(),
        counts.len(),
        corrupt.len(),
        started.elapsed()
    );
    assert!(
        lost.is_empty(),
        "seed {seed}: {} payloads reported durable never arrived (first: {:?})",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(wanted > 0, "nothing was ever reported durable");
    for phase in cycle {
        let n = hits.get(&phase).copied().unwrap_or(0);
        assert!(
            n >= HITS_PER_PHASE,
            "seed {seed}: phase {phase:?} hit {n} times (want {HITS_PER_PHASE})"
        );
    }
    assert!(total_hits >= HITS_TOTAL, "seed {seed}: {total_hits} hits");
    assert!(kills >= 20);
    assert_empty_spool(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- Memory while a large spool is replayed ----

/// The memory bounds of the large-spool children.
const MEM_PAYLOADS: usize = 64;
const MEM_BYTES: usize = 8 << 20;

/// What a large payload is: [`payload`] with a first message of 32 KiB.
fn large_payload(producer: usize, seq: usize) -> LogPayload {
    let mut p = payload(producer, seq);
    p.logs[0].message = format!("{seq:08}").repeat(4 << 10);
    p
}

fn bounded(addr: &str) -> ConfigBuilder {
    fast_config(addr)
        .max_buffered_payloads(MEM_PAYLOADS)
        .max_buffered_bytes(MEM_BYTES)
}

/// This process's peak resident set (`VmHWM`), in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Samples `stats().unacked_bytes` every millisecond until [`PeakHeld::peak`]; keeps
/// the peak.
struct PeakHeld {
    stop: Arc<AtomicU64>,
    sampler: std::thread::JoinHandle<u64>,
}

impl PeakHeld {
    fn start(sender: &Arc<LogSender>) -> PeakHeld {
        let stop = Arc::new(AtomicU64::new(0));
        let (s, sender) = (stop.clone(), sender.clone());
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while s.load(Ordering::SeqCst) == 0 {
                peak = peak.max(sender.stats().unacked_bytes);
                std::thread::sleep(Duration::from_millis(1));
            }
            peak
        });
        PeakHeld { stop, sampler }
    }

    /// Stops sampling (the sampler lets go of the sender); the peak seen.
    fn peak(self) -> u64 {
        self.stop.store(1, Ordering::SeqCst);
        self.sampler.join().unwrap()
    }
}

/// Fills a spool with `n` large payloads, the collector away, and shuts down.
fn build_large(args: &Args, addr: &str) {
    let n = args.num("n") as usize;
    let config = bounded(addr)
        .spool(args.get("dir"))
        .spool_max_bytes(4 << 30)
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 16, 2);
    for seq in 0..n {
        tx.send(large_payload(7, seq)).unwrap();
    }
    let d = sender.sync(Duration::from_secs(120)).unwrap();
    drop(tx);
    let done = sender.shutdown(Duration::from_millis(500));
    println!(
        "BUILT durable={} left={} hwm_kib={}",
        d.durable,
        done.report.left_in_spool,
        vm_hwm_kib()
    );
}

/// Sends what a large spool holds, under the small memory bounds.
fn replay_large(args: &Args, addr: &str) {
    let config = bounded(addr).spool(args.get("dir")).build().unwrap();
    let sender = Arc::new(LogSender::new(config).unwrap());
    let held = PeakHeld::start(&sender);
    let report = sender.flush(Duration::from_secs(120));
    let peak = held.peak();
    let hwm = vm_hwm_kib();
    let s = sender.stats();
    let Ok(sender) = Arc::try_unwrap(sender) else {
        panic!("the sampler still holds the sender");
    };
    let done = sender.shutdown(Duration::from_secs(5));
    println!(
        "REPLAYED all_delivered={} replayed={} acked={} peak_held={peak} hwm_kib={hwm} left={}",
        report.all_delivered(),
        s.replayed,
        s.acknowledged,
        done.report.left_in_spool
    );
}

/// Sends `n` large payloads from memory, under the same bounds, no spool.
fn baseline(args: &Args, addr: &str) {
    let n = args.num("n") as usize;
    let config = bounded(addr).build().unwrap();
    let (sender, tx) = sender_with_pool(config, 16, 2);
    let sender = Arc::new(sender);
    let held = PeakHeld::start(&sender);
    for seq in 0..n {
        tx.send(large_payload(8, seq)).unwrap();
    }
    let report = sender.flush(Duration::from_secs(120));
    let peak = held.peak();
    let hwm = vm_hwm_kib();
    let s = sender.stats();
    println!(
        "BASELINE all_delivered={} acked={} peak_held={peak} hwm_kib={hwm}",
        report.all_delivered(),
        s.acknowledged
    );
}

/// The headroom allowed over the baseline's peak besides the memory bound: allocator
/// slack, the spool's read buffer, the grpc core's buffers growing differently.
const MEM_SLACK: u64 = 32 << 20;

#[test]
fn replaying_a_large_spool_takes_no_more_memory_than_shipping_from_memory() {
    // LOGSENDER_SPOOL_MEM_MB: the spool's size (at least 128 MiB: the drain must peak far
    // below it, and a test binary with the gRPC core takes some 30 MiB by itself).
    let mib: u64 = std::env::var("LOGSENDER_SPOOL_MEM_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
        .max(128);
    let one = logsender::wire::encoded_len(&large_payload(7, 0)) as u64;
    let n = (mib << 20) / one;
    let dir = temp_path("spool-mem");
    let started = Instant::now();

    // A large spool, left by a sender that never reached its collector.
    let (stdout, _, took_build) = run_child(
        CHILD_TEST,
        CHILD,
        &format!("build,dir={},n={n}", dir.display()),
        &unserved_addr(),
    );
    let built = ChildLine::find(&stdout, "BUILT");
    assert_eq!(built.field("durable"), "true", "{stdout}");
    assert_eq!(built.number("left"), n, "{stdout}");
    let spool_bytes: u64 = files_in(&dir).iter().map(|f| f.1).sum();
    assert!(spool_bytes >= n * one, "{spool_bytes}");

    // The sink lives here, so the children's memory is the sender's only; it counts
    // what it receives, and keeps the ids only.
    let sink = Sink::start();
    sink.keep_payloads(false);
    let (stdout, _, took_replay) = run_child(
        CHILD_TEST,
        CHILD,
        &format!("replay,dir={}", dir.display()),
        &sink.addr(),
    );
    let replay = ChildLine::find(&stdout, "REPLAYED");
    assert_eq!(replay.field("all_delivered"), "true", "{stdout}");
    assert_eq!(replay.number("replayed"), n, "{stdout}");
    assert_eq!(replay.number("left"), 0, "{stdout}");
    let (stdout, _, took_base) =
        run_child(CHILD_TEST, CHILD, &format!("baseline,n={n}"), &sink.addr());
    let base = ChildLine::find(&stdout, "BASELINE");
    assert_eq!(base.field("all_delivered"), "true", "{stdout}");

    // Each payload arrived, from both.
    let ids: HashSet<String> = sink.ok_ids().into_iter().collect();
    for (producer, what) in [(7, "replayed"), (8, "baseline")] {
        let missing = (0..n as usize)
            .filter(|seq| !ids.contains(&id_of(&payload(producer, *seq))))
            .count();
        assert_eq!(missing, 0, "{what}: {missing} of {n} never arrived");
    }

    let drain_hwm = replay.number("hwm_kib") << 10;
    let base_hwm = base.number("hwm_kib") << 10;
    let bound = base_hwm + MEM_BYTES as u64 + MEM_SLACK;
    println!(
        "spool {} MiB ({n} payloads of {one} bytes): drain peak RSS {} MiB (held at most \
         {} KiB), baseline from memory {} MiB (held at most {} KiB), builder {} MiB; \
         allowed {} MiB; build {took_build:?}, drain {took_replay:?}, baseline \
         {took_base:?}, {:?} in all",
        spool_bytes >> 20,
        drain_hwm >> 20,
        replay.number("peak_held") >> 10,
        base_hwm >> 20,
        base.number("peak_held") >> 10,
        built.number("hwm_kib") >> 10,
        bound >> 20,
        started.elapsed()
    );
    assert!(replay.number("peak_held") <= MEM_BYTES as u64);
    assert!(
        drain_hwm <= bound,
        "the drain peaked at {drain_hwm} bytes, the baseline at {base_hwm}"
    );
    assert!(
        drain_hwm < spool_bytes / 2,
        "the drain peaked at {drain_hwm} bytes for a spool of {spool_bytes}"
    );
    assert_empty_spool(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- Damage under a real sender ----

/// What a handler heard from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    Replaying(u64),
    Corrupt(PathBuf, u64, u64),
    Io(PathBuf, std::io::ErrorKind),
    Other(String),
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Heard>>);

impl EventHandler for Recorder {
    fn on_spool(&self, event: &SpoolEvent) {
        let heard = match event {
            SpoolEvent::Replaying { payloads, .. } => Heard::Replaying(*payloads),
            SpoolEvent::Corrupt { path, offset, len } => {
                Heard::Corrupt(path.clone(), *offset, *len)
            }
            SpoolEvent::Io { path, kind, .. } => Heard::Io(path.clone(), *kind),
            other => Heard::Other(format!("{other:?}")),
        };
        self.0.lock().unwrap().push(heard);
    }
}

/// A record of a segment file, read the way `src/spool/record.rs` writes it: a 36-byte
/// header (magic "LSP1", body length, ...), then the body (the payload's wire bytes).
#[derive(Debug, Clone)]
struct Rec {
    start: u64,
    end: u64,
    id: String,
}

const HEADER: usize = 36;

fn records_of(path: &Path) -> Vec<Rec> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        assert_eq!(&bytes[at..at + 4], b"LSP1", "{} at {at}", path.display());
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[at + 4..at + 8]);
        let end = at + HEADER + u32::from_le_bytes(len) as usize;
        let p = logsender::wire::decode(&bytes[at + HEADER..end]).unwrap();
        out.push(Rec {
            start: at as u64,
            end: end as u64,
            id: id_of(&p),
        });
        at = end;
    }
    out
}

#[test]
fn damaged_spool_files_are_reported_where_they_are_and_everything_intact_is_delivered() {
    let seed = seed();
    println!("damage seed {seed} (LOGSENDER_CRASH_SEED={seed} runs it again)");
    let mut rng = Rng(seed);
    let dir = temp_path("spool-damage");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let n = 100;
    // Segments of 4 KiB (a few records each), left by a sender with no collector.
    let sent = {
        let config = fast_config(&addr)
            .max_buffered_payloads(10)
            .spool(&dir)
            .spool_segment_bytes(4096)
            .build()
            .unwrap();
        let (sender, tx) = sender_with_pool(config, 128, 2);
        let sent = queue(&tx, 3, 0..n);
        let d = sender.sync(Duration::from_secs(20)).unwrap();
        assert!(d.durable, "{d:?}");
        drop(tx);
        let done = sender.shutdown(Duration::from_millis(300));
        assert_eq!(done.report.left_in_spool, n as u64);
        sent
    };
    let segs = segments_in(&dir);
    let recs: Vec<Vec<Rec>> = segs.iter().map(|s| records_of(s)).collect();
    assert_eq!(recs.iter().map(Vec::len).sum::<usize>(), n);
    assert!(segs.len() >= 8, "{} segments", segs.len());

    // Which segment gets what: the first stays whole (the sender loads from it before
    // the run-time removal), the last is removed while the sender runs.
    let mut middle: Vec<usize> = (1..segs.len() - 1).collect();
    for i in (1..middle.len()).rev() {
        middle.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let (flip, cut, gone, garbage) = (middle[0], middle[1], middle[2], middle[3]);
    let removed = segs.len() - 1;
    // `lost` holds the ids of the records that cannot arrive.
    let mut lost: HashSet<String> = HashSet::new();
    let mut expected: Vec<(usize, Heard)> = Vec::new();

    // Flipped bytes in one record: that record is skipped, its neighbours are not.
    let r = &recs[flip][rng.below(recs[flip].len() as u64) as usize];
    let mut bytes = std::fs::read(&segs[flip]).unwrap();
    let at = r.start + rng.below(r.end - r.start);
    bytes[at as usize] ^= 1 + rng.below(255) as u8;
    std::fs::write(&segs[flip], &bytes).unwrap();
    lost.insert(r.id.clone());
    expected.push((
        flip,
        Heard::Corrupt(segs[flip].clone(), r.start, r.end - r.start),
    ));

    // Cut short inside a record: the records before it arrive, it and the rest do not.
    let k = rng.below(recs[cut].len() as u64) as usize;
    let r = &recs[cut][k];
    let at = r.start + 1 + rng.below(r.end - r.start - 1);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[cut])
        .unwrap();
    file.set_len(at).unwrap();
    drop(file);
    lost.extend(recs[cut][k..].iter().map(|r| r.id.clone()));
    expected.push((
        cut,
        Heard::Corrupt(segs[cut].clone(), r.start, at - r.start),
    ));

    // Deleted before the start: nothing says it was there; only its records are gone.
    std::fs::remove_file(&segs[gone]).unwrap();
    lost.extend(recs[gone].iter().map(|r| r.id.clone()));

    // Overwritten with garbage, with the magic and plausible lengths strewn in it: one
    // stretch of damage, the whole file.
    let len = std::fs::metadata(&segs[garbage]).unwrap().len() as usize;
    let mut junk: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
    for _ in 0..20 {
        let at = rng.below((len - 8) as u64) as usize;
        junk[at..at + 4].copy_from_slice(b"LSP1");
        let claimed = rng.below(len as u64) as u32;
        junk[at + 4..at + 8].copy_from_slice(&claimed.to_le_bytes());
    }
    std::fs::write(&segs[garbage], &junk).unwrap();
    lost.extend(recs[garbage].iter().map(|r| r.id.clone()));
    expected.push((
        garbage,
        Heard::Corrupt(segs[garbage].clone(), 0, len as u64),
    ));

    // Start-up reads the segments in order; then it says what it will send.
    expected.sort_by_key(|e| e.0);
    let mut expected: Vec<Heard> = expected.into_iter().map(|e| e.1).collect();
    let backlog = (n - lost.len()) as u64;
    expected.push(Heard::Replaying(backlog));

    // A new sender, no collector yet: start-up never fails, and it loads only what its
    // memory bound (5) holds.
    let recorder = Arc::new(Recorder::default());
    let config = fast_config(&addr)
        .max_buffered_payloads(5)
        .spool(&dir)
        .event_handler(recorder.clone())
        .build()
        .unwrap();
    let sender = LogSender::new(config).expect("start-up over a damaged spool");
    assert!(
        wait_until(Duration::from_secs(5), || sender.stats().replayed == 5),
        "{:?}",
        sender.stats()
    );
    assert_eq!(*recorder.0.lock().unwrap(), expected);

    // The last segment, removed while the sender runs, before it was read back: an
    // Io event (not found), and its whole length skipped.
    let removed_len = std::fs::metadata(&segs[removed]).unwrap().len();
    std::fs::remove_file(&segs[removed]).unwrap();
    lost.extend(recs[removed].iter().map(|r| r.id.clone()));
    expected.push(Heard::Io(
        segs[removed].clone(),
        std::io::ErrorKind::NotFound,
    ));
    expected.push(Heard::Corrupt(segs[removed].clone(), 0, removed_len));

    // The collector comes: everything intact arrives, nothing damaged.
    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    let report = sender.flush(Duration::from_secs(30));
    let stats = sender.stats();
    // All delivered but what the segment removed at run time held: counted as lost,
    // so the report does not say all delivered.
    let gone_at_run_time = recs[removed].len() as u64;
    assert_eq!(report.lost_in_spool, gone_at_run_time, "{report:?}");
    assert_eq!(report.entries_lost_in_spool, 3 * gone_at_run_time);
    assert_eq!(stats.spool_lost, gone_at_run_time);
    assert!(!report.all_delivered());
    assert_eq!(
        (
            report.outstanding,
            report.dropped,
            report.dead_lettered,
            report.handed_back,
            report.left_in_spool
        ),
        (0, 0, 0, 0, 0),
        "{report:?} {stats:?}"
    );
    assert_eq!(*recorder.0.lock().unwrap(), expected);
    assert_eq!(stats.spool_corrupt, 4, "{stats:?}");
    assert_eq!(stats.spool_io_errors, 1, "{stats:?}");
    assert_eq!(
        stats.replayed,
        backlog - recs[removed].len() as u64,
        "{stats:?}"
    );
    let intact: Vec<LogPayload> = sent
        .into_iter()
        .filter(|p| !lost.contains(&id_of(p)))
        .collect();
    // Each intact payload arrived, as it was sent; nothing else did.
    assert_at_least_once(&intact, &sink.received());
    let acked: HashSet<String> = sink.ok_ids().into_iter().collect();
    assert_eq!(acked.len(), intact.len());
    println!(
        "{} segments; flipped {flip}, cut {cut} at record {k}, deleted {gone}, garbage \
         {garbage}, removed at run time {removed}; {} of {n} delivered ({} received); \
         events {:?}",
        segs.len(),
        intact.len(),
        sink.count(),
        expected
    );
    let done = sender.shutdown(Duration::from_secs(5));
    // The whole life's report says what was lost at run time, and nothing else.
    assert_eq!(
        done.report.lost_in_spool, gone_at_run_time,
        "{:?}",
        done.report
    );
    assert_eq!(
        done.report.acknowledged,
        intact.len() as u64,
        "{:?}",
        done.report
    );
    assert_empty_spool(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `.seg` files of `dir`, in order.
fn segments_in(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

/// Everything a sender appended was acknowledged and it shut down: the next sender on
/// the directory has nothing to send again. (The releases that emptied the segment
/// appends still went to were not noted anywhere, so a restart sent them again.)
#[test]
fn a_clean_shutdown_after_appends_leaves_nothing_to_send_again() {
    for (collector_at_start, n) in [(false, 60), (true, 60), (true, 3)] {
        let dir = temp_path("spool-clean");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut sink =
            collector_at_start.then(|| Sink::start_with(port, Ending::OkNoMessage, None));
        let config = fast_config(&addr)
            .max_buffered_payloads(5)
            .spool(&dir)
            .spool_segment_bytes(4096)
            .build()
            .unwrap();
        let (sender, tx) = sender_with_pool(config, 128, 1);
        let sent = queue(&tx, 5, 0..n);
        assert!(sender.sync(Duration::from_secs(20)).unwrap().durable);
        let sink = sink.get_or_insert_with(|| Sink::start_with(port, Ending::OkNoMessage, None));
        let report = sender.flush(Duration::from_secs(20));
        assert!(report.all_delivered(), "{report:?}");
        drop(tx);
        let done = sender.shutdown(Duration::from_secs(5));
        assert!(done.report.all_delivered(), "{:?}", done.report);
        assert_eq!(done.report.left_in_spool, 0);
        drop(sender);
        let got = sink.received();
        assert_at_least_once(&sent, &got);
        // The next sender on the directory.
        let config = fast_config(&addr).spool(&dir).build().unwrap();
        let again = LogSender::new(config).unwrap();
        let report = again.flush(Duration::from_secs(10));
        assert!(report.all_delivered(), "{report:?}");
        assert_eq!(
            again.stats().replayed,
            0,
            "n={n}: sent again after a clean shutdown"
        );
        drop(again);
        assert_eq!(sink.count(), got.len(), "n={n}");
        assert_empty_spool(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A segment this run wrote, removed while the sender runs before its records were
/// read back: reported (an Io event, its length skipped), and `flush` does not wait for
/// what no longer exists; everything else arrives.
#[test]
fn a_segment_of_this_run_removed_while_it_runs_is_reported_and_not_waited_for() {
    let dir = temp_path("spool-removed");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let recorder = Arc::new(Recorder::default());
    let config = fast_config(&addr)
        .max_buffered_payloads(5)
        .spool(&dir)
        .spool_segment_bytes(4096)
        .event_handler(recorder.clone())
        .build()
        .unwrap();
    // No collector: the first 5 are in memory too, the rest on disk only.
    let (sender, tx) = sender_with_pool(config, 128, 1);
    let sent = queue(&tx, 6, 0..60);
    assert!(sender.sync(Duration::from_secs(20)).unwrap().durable);
    let segs = segments_in(&dir);
    assert!(segs.len() >= 5, "{segs:?}");
    let gone = &segs[segs.len() - 3];
    let lost: HashSet<String> = records_of(gone).into_iter().map(|r| r.id).collect();
    let len = std::fs::metadata(gone).unwrap().len();
    std::fs::remove_file(gone).unwrap();
    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    let report = sender.flush(Duration::from_secs(10));
    assert_eq!(report.outstanding, 0, "{report:?} {:?}", sender.stats());
    // Counted as lost, in payloads and entries, and the report says not all arrived.
    assert!(!lost.is_empty());
    assert_eq!(report.lost_in_spool, lost.len() as u64, "{report:?}");
    assert_eq!(report.entries_lost_in_spool, 3 * lost.len() as u64);
    assert!(!report.all_delivered());
    let stats = sender.stats();
    assert_eq!(stats.spool_lost, lost.len() as u64);
    assert_eq!(stats.entries_spool_lost, 3 * lost.len() as u64);
    assert_eq!(
        *recorder.0.lock().unwrap(),
        vec![
            Heard::Io(gone.clone(), std::io::ErrorKind::NotFound),
            Heard::Corrupt(gone.clone(), 0, len)
        ]
    );
    let rest: Vec<LogPayload> = sent
        .into_iter()
        .filter(|p| !lost.contains(&id_of(p)))
        .collect();
    assert_at_least_once(&rest, &sink.received());
    drop(tx);
    drop(sender);
    let _ = std::fs::remove_dir_all(&dir);
}
