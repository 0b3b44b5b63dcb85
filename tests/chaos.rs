//! The delivery guarantee under fire: the collector runs in a child process that is
//! SIGKILLed and restarted on the same port over and over while 8 producers push
//! payloads through 4 workers (at-least-once, many small epochs). Afterwards every
//! payload must be in the collector's record at least once: a single missing id fails.
//!
//! The kill schedule comes from a small xorshift generator seeded from the clock; the
//! seed is printed, and `CHAOS_SEED=<seed>` replays the same schedule.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logsender::LogSender;
use support::child::ChildSink;
use support::collect::Collector;
use support::helpers::{assert_no_background_panic, temp_path, wait_until, watch_panics};

const ENTRY: &str = "child_sink_entry";
const PRODUCERS: usize = 8;
const WORKERS: usize = 4;
/// Every producer sends at least this many (8 × 2,500 = 20,000), and keeps going at
/// its pace until the chaos is over, up to `MAX_PER_PRODUCER`.
const MIN_PER_PRODUCER: usize = 2_500;
const MAX_PER_PRODUCER: usize = 12_500;
const KILLS: usize = 30;

/// The child-process sink: re-executed by `ChildSink` with `--include-ignored`.
#[test]
#[ignore = "entry point of the child-process sink, run by ChildSink"]
fn child_sink_entry() {
    support::child::child_main()
}

/// xorshift64*: enough randomness for a kill schedule, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> (Rng, u64) {
        let seed = std::env::var("CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| {
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9E37_79B9_7F4A_7C15);
                t ^ (u64::from(std::process::id()) << 32)
            });
        // Zero is the one state xorshift cannot leave.
        (Rng(seed.max(1)), seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// How a kill was timed.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// After a random 20–150 ms of uptime.
    Random,
    /// Right after an epoch was committed: between epochs.
    AfterCommit,
    /// A few ms after a commit: inside the next epoch, sometimes while the client
    /// waits for its final status.
    IntoNextEpoch,
}

/// Waits (up to 1 s) until the sender commits another epoch.
fn wait_next_commit(sender: &LogSender) -> bool {
    let base = sender.stats().epochs_committed;
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if sender.stats().epochs_committed != base {
            return true;
        }
        thread::sleep(Duration::from_micros(500));
    }
    false
}

#[test]
fn no_payload_is_lost_while_the_collector_is_killed_and_restarted() {
    watch_panics();
    let started = Instant::now();
    let (mut rng, seed) = Rng::seeded();
    println!("chaos: seed {seed} (CHAOS_SEED={seed} replays this kill schedule)");

    let record = temp_path("chaos-record");
    let mut child = ChildSink::spawn(ENTRY, 0, &record);
    let collector = Collector::new();
    // The default bound (10,000 payloads) and policy (Block): producers outrun the
    // sender during outages, so back-pressure is part of the chaos.
    let config = support::fast_config(&child.addr())
        .commit_every(200)
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let sender = LogSender::new(config).expect("sender");
    let (tx, rx) = crossbeam_channel::bounded(1_000);
    sender.start_worker_pool(rx, WORKERS).expect("workers");

    let chaos_done = AtomicBool::new(false);
    let mut kills_by_kind: HashMap<&'static str, usize> = HashMap::new();
    let mut commits_missed = 0;
    let produced: Vec<usize> = thread::scope(|s| {
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let tx = tx.clone();
                let chaos_done = &chaos_done;
                s.spawn(move || {
                    let mut seq = 0;
                    while seq < MAX_PER_PRODUCER
                        && (seq < MIN_PER_PRODUCER || !chaos_done.load(Ordering::Acquire))
                    {
                        tx.send(support::payload(p, seq)).expect("queue open");
                        seq += 1;
                        thread::sleep(Duration::from_millis(1));
                    }
                    seq
                })
            })
            .collect();

        // The chaos: this thread owns the child and kills it KILLS times.
        for _ in 0..KILLS {
            let kind = match rng.range(0, 3) {
                0 => KillAt::Random,
                1 => KillAt::AfterCommit,
                _ => KillAt::IntoNextEpoch,
            };
            match kind {
                KillAt::Random => thread::sleep(rng.millis(20, 150)),
                KillAt::AfterCommit => {
                    if !wait_next_commit(&sender) {
                        commits_missed += 1;
                    }
                }
                KillAt::IntoNextEpoch => {
                    if !wait_next_commit(&sender) {
                        commits_missed += 1;
                    }
                    thread::sleep(rng.millis(1, 40));
                }
            }
            let st = sender.stats();
            println!(
                "chaos: kill {} ({}) at {:?}: sent {} acked {} unacked {} queue {} epochs {}/{}",
                kills_by_kind.values().sum::<usize>() + 1,
                kind_name(kind),
                started.elapsed(),
                st.sent,
                st.acknowledged,
                st.unacked,
                st.queue_depth,
                st.epochs_committed,
                st.epochs_failed
            );
            child.kill();
            *kills_by_kind.entry(kind_name(kind)).or_default() += 1;
            thread::sleep(rng.millis(0, 80));
            child.restart();
        }
        chaos_done.store(true, Ordering::Release);
        producers
            .into_iter()
            .map(|h| h.join().expect("producer panicked"))
            .collect()
    });
    drop(tx);
    let total: usize = produced.iter().sum();
    let kills: usize = kills_by_kind.values().sum();
    println!(
        "chaos: {kills} kills {kills_by_kind:?} ({commits_missed} waits for a commit timed out); \
         {total} payloads produced in {:?}",
        started.elapsed()
    );

    // The collector is up for good now: everything must be acknowledged.
    let drained = wait_until(Duration::from_secs(30), || {
        let st = sender.stats();
        st.acknowledged == total as u64 && st.unacked == 0 && st.queue_depth == 0
    });
    let stats = sender.stats();
    println!("chaos: final stats {stats:#?}");
    let close_started = Instant::now();
    let undelivered = sender.close_timeout(Duration::from_secs(60)).undelivered;
    println!(
        "chaos: close_timeout returned {} payloads in {:?}",
        undelivered.len(),
        close_started.elapsed()
    );

    // What the collector recorded, across all its lives.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut lines = 0usize;
    let mut malformed = 0usize;
    for line in child.records() {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(_agent), Some(id), None) => {
                *seen.entry(id.to_string()).or_default() += 1;
                lines += 1;
            }
            _ => malformed += 1,
        }
    }
    drop(child);
    let handed_back: HashMap<String, usize> = support::helpers::id_counts(&undelivered);
    let mut missing = Vec::new();
    let mut expected = 0usize;
    for (p, &n) in produced.iter().enumerate() {
        for seq in 0..n {
            expected += 1;
            let id = format!("{p}-{seq}");
            if !seen.contains_key(&id) && !handed_back.contains_key(&id) {
                missing.push(id);
            }
        }
    }
    let unknown: Vec<&String> = seen
        .keys()
        .filter(|id| {
            let parsed = id
                .split_once('-')
                .and_then(|(p, s)| Some((p.parse::<usize>().ok()?, s.parse::<usize>().ok()?)));
            !matches!(parsed, Some((p, s)) if p < PRODUCERS && s < produced[p])
        })
        .take(5)
        .collect();
    let duplicates = lines - seen.len();
    println!(
        "chaos: {expected} expected, {} distinct recorded, {duplicates} duplicates, \
         {malformed} malformed lines, {} missing; stats: sent {} acknowledged {} \
         resent_after_fault {} epochs committed/failed {}/{} reconnects {} dead_lettered {} \
         dropped {}; seed {seed}; whole test {:?}",
        seen.len(),
        missing.len(),
        stats.sent,
        stats.acknowledged,
        stats.resent_after_fault,
        stats.epochs_committed,
        stats.epochs_failed,
        stats.reconnects,
        stats.dead_lettered,
        stats.dropped(),
        started.elapsed()
    );

    assert!(
        missing.is_empty(),
        "{} of {expected} payloads were LOST (neither recorded by the collector nor handed \
         back by close); first few: {:?}; seed {seed}; record kept at {}",
        missing.len(),
        &missing[..missing.len().min(10)],
        record.display()
    );
    assert!(
        undelivered.is_empty(),
        "the collector was up, yet close_timeout(60 s) handed back {} payloads (first few: {:?})",
        undelivered.len(),
        support::collect::ids(&undelivered[..undelivered.len().min(5)])
    );
    assert!(
        unknown.is_empty(),
        "the collector recorded ids never sent: {unknown:?}"
    );
    assert!(
        drained,
        "not everything was acknowledged within 30 s of the last restart"
    );
    assert_eq!(stats.acknowledged, total as u64, "acknowledged count");
    assert_eq!(
        stats.enqueued, total as u64,
        "every payload is taken in once"
    );
    assert_eq!(
        stats.dead_lettered,
        0,
        "dead letters: {:?}",
        collector.dead_letters()
    );
    assert_eq!(stats.dropped(), 0, "drops: {:?}", collector.dropped.lock());
    assert!(
        stats.epochs_failed > 0,
        "no kill hit an open epoch: the chaos did nothing"
    );
    assert_eq!(kills, KILLS);
    assert_no_background_panic();
    let _ = std::fs::remove_file(&record);
}

fn kind_name(kind: KillAt) -> &'static str {
    match kind {
        KillAt::Random => "random",
        KillAt::AfterCommit => "after-commit",
        KillAt::IntoNextEpoch => "into-next-epoch",
    }
}
