//! Reports that never mislead: each test forces an interleaving in which a report used
//! to say `all_delivered()` while something was dropped or handed back, or a handle
//! leaked its threads, and proves the interleaving happened (a pause point of the
//! `test-hooks` feature, a handler that blocks, or timing that the test checks). The
//! pause points are process-wide, so the tests of this file run one at a time.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logsender::hooks::{hits, Point};
use logsender::{
    Batching, Covers, DropReason, DroppedEvent, EventHandler, Level, LogEntry, LogPayload,
    LogSender, OverflowPolicy, RpcStatusCode, Shutdown,
};
use support::helpers::{
    assert_no_background_panic, unserved_addr, wait_until, watch_panics, within,
};
use support::sink::Sink;
use support::{fast_config, logsender_threads, payload, queue, sender_with_pool, Pause};

static SERIAL: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(20);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An `on_dropped` that says it was entered, then blocks until released.
struct BlockingDrops {
    entered: crossbeam_channel::Sender<DropReason>,
    release: crossbeam_channel::Receiver<()>,
    left: AtomicBool,
}

impl EventHandler for BlockingDrops {
    fn on_dropped(&self, event: DroppedEvent) {
        let _ = self.entered.send(event.reason());
        let _ = self.release.recv_timeout(WAIT);
        self.left.store(true, Ordering::SeqCst);
    }
}

/// Item 1: a payload dropped by `DropNewest` is counted before it stops being
/// outstanding. The handler blocks while `flush` runs: the flush sees the drop.
#[test]
fn a_drop_whose_handler_is_still_running_is_in_the_flush_report() {
    let _serial = serial();
    watch_panics();
    let sink = Sink::start();
    // Two payloads, one worker, room for one: the worker takes the first and writes
    // it, then takes the second while the first is held (not committed yet: that takes
    // a half-close and the collector's answer) and drops it. Should the first be
    // committed first, the round is tried again.
    for round in 0..20 {
        let (entered_tx, entered) = crossbeam_channel::unbounded();
        let (release, release_rx) = crossbeam_channel::unbounded();
        let handler = Arc::new(BlockingDrops {
            entered: entered_tx,
            release: release_rx,
            left: AtomicBool::new(false),
        });
        let config = fast_config(&sink.addr())
            .max_buffered_payloads(1)
            .overflow(OverflowPolicy::DropNewest)
            .event_handler(handler.clone())
            .build()
            .expect("config");
        let sender = LogSender::new(config).expect("sender");
        let (tx, rx) = crossbeam_channel::bounded(4);
        queue(&tx, round, 0..2);
        sender.start_worker_pool(rx, 1).expect("pool");
        match entered.recv_timeout(Duration::from_secs(2)) {
            Ok(reason) => assert_eq!(reason, DropReason::Newest),
            Err(_) => {
                // Both were delivered: no drop this round.
                drop(release);
                sender.close();
                continue;
            }
        }
        // The handler is inside now, and stays there while the flush runs.
        let report = sender.flush(Duration::from_secs(5));
        assert_eq!(report.outstanding, 0, "{report:?}");
        assert_eq!(report.acknowledged, 1, "{report:?}");
        assert_eq!(report.dropped, 1, "{report:?}");
        assert_eq!(report.entries_dropped, 3, "{report:?}");
        assert!(!report.all_delivered(), "{report:?}");
        assert!(
            !handler.left.load(Ordering::SeqCst),
            "the handler left before the flush returned: the race was not hit"
        );
        drop(release);
        let done = sender.close();
        assert_eq!(done.report.dropped, 1, "{:?}", done.report);
        assert_no_background_panic();
        return;
    }
    panic!("in 20 rounds the second payload was never dropped: the race was not hit");
}

/// Runs `flush(10 s)` on one thread and, once it is waiting, `shutdown(timeout)` on
/// another; returns both outcomes and how long the flush took.
fn flush_racing_shutdown(
    sender: Arc<LogSender>,
    timeout: Duration,
) -> (logsender::Report, Shutdown, Duration) {
    let flusher = {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let report = sender.flush(Duration::from_secs(10));
            (report, started.elapsed())
        })
    };
    // The flush is waiting (nothing can be delivered) when the shutdown starts.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!flusher.is_finished(), "the flush returned before the race");
    let shutdown = within(WAIT, "shutdown", move || sender.shutdown(timeout));
    let (report, took) = flusher.join().expect("flusher");
    (report, shutdown, took)
}

/// Item 2, payload level: what the shutdown hands back is handed back in the racing
/// flush's report too. With a 300 ms deadline the payloads are held (the ledger path);
/// with none, two still wait in the queue behind a worker waiting for room (the queue
/// path).
#[test]
fn a_flush_racing_shutdown_reports_what_the_shutdown_hands_back() {
    let _serial = serial();
    watch_panics();
    for (timeout, overflow) in [
        (Duration::from_millis(300), OverflowPolicy::DropNewest),
        (Duration::ZERO, OverflowPolicy::Block { timeout: None }),
    ] {
        let config = fast_config(&unserved_addr())
            .max_buffered_payloads(if timeout.is_zero() { 1 } else { 100 })
            .overflow(overflow)
            .build()
            .expect("config");
        let (sender, tx) = sender_with_pool(config, 8, 1);
        let n = if timeout.is_zero() { 4 } else { 3 };
        queue(&tx, 0, 0..n);
        if timeout.is_zero() {
            // One held, one in the worker's hands waiting for room, two queued.
            assert!(wait_until(WAIT, || sender.stats().queue_depth == 2));
        } else {
            assert!(wait_until(WAIT, || sender.stats().unacked == 3));
        }
        let (report, shutdown, took) = flush_racing_shutdown(Arc::new(sender), timeout);
        assert_eq!(shutdown.undelivered.len(), n, "{:?}", shutdown.report);
        assert_eq!(shutdown.report.handed_back, n as u64);
        assert!(
            took < Duration::from_secs(5),
            "the flush waited {took:?}: it did not end with the shutdown"
        );
        assert_eq!(report.handed_back, n as u64, "{report:?}");
        assert_eq!(report.entries_handed_back, 3 * n as u64, "{report:?}");
        assert!(!report.all_delivered(), "{report:?}");
    }
    assert_no_background_panic();
}

fn template() -> LogPayload {
    LogPayload::from_host("agent-reports")
}

fn entry(i: usize) -> LogEntry {
    LogEntry::new(Level::Info, format!("entry {i}"))
}

/// Item 2, entry level: the batcher, blocked on its pool's full queue, takes the flush
/// marker only once the shutdown stops it, keeps its last batches to hand back, and
/// answers the marker: the flush must say they were handed back.
#[test]
fn an_entry_flush_racing_shutdown_reports_the_batches_the_batcher_kept() {
    let _serial = serial();
    watch_panics();
    let config = fast_config(&unserved_addr())
        .max_buffered_payloads(1)
        .overflow(OverflowPolicy::Block { timeout: None })
        .build()
        .expect("config");
    let sender = Arc::new(LogSender::new(config).expect("sender"));
    // One entry a payload, one worker, a pool queue of two.
    let log = sender
        .entry_sender(Batching::new(template()).max_entries(1).workers(1))
        .expect("entry sender");
    // 1 held, 1 waiting for room, 2 queued, 1 in the batcher's hands, 1 on its channel.
    for i in 0..6 {
        log.log(entry(i)).expect("log");
    }
    assert!(wait_until(WAIT, || sender.stats().queue_depth == 2));
    let (report, shutdown, took) = flush_racing_shutdown(sender.clone(), Duration::ZERO);
    assert_eq!(shutdown.undelivered.len(), 6, "{:?}", shutdown.report);
    assert!(took < Duration::from_secs(5), "the flush waited {took:?}");
    assert_eq!(report.entries_handed_back, 6, "{report:?}");
    assert_eq!(report.handed_back, 6, "{report:?}");
    assert!(!report.all_delivered(), "{report:?}");
    // A second shutdown gets the first one's report (made while the first runs, it
    // waits for it on the same lock, then takes the same path).
    let second = sender.shutdown(Duration::from_secs(1));
    assert!(second.undelivered.is_empty());
    assert_eq!(second.report, shutdown.report);
    assert!(!second.report.all_delivered());
    assert!(matches!(
        log.log(entry(7)),
        Err(logsender::LogError::Closed(_))
    ));
    assert_no_background_panic();
}

/// This process's resident set, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// This test's batcher and worker threads.
fn batchers_and_workers() -> usize {
    logsender_threads()
        .iter()
        .filter(|name| name.contains("-b") || name.contains("-w") && !name.ends_with("-wr"))
        .count()
}

/// Item 3: a dropped `EntrySender` lets its batcher and workers go, and frees its
/// channel; what was logged through it is delivered and covered by `flush`.
#[test]
fn dropped_entry_handles_free_their_threads_and_memory() {
    let _serial = serial();
    watch_panics();
    let sink = Sink::start();
    let sender =
        LogSender::new(fast_config(&sink.addr()).build().expect("config")).expect("sender");
    let baseline_threads = batchers_and_workers();
    assert_eq!(baseline_threads, 0);
    // Warm up the allocator and the stream.
    {
        let log = sender
            .entry_sender(Batching::new(template()))
            .expect("handle");
        log.log(entry(0)).expect("log");
    }
    assert!(sender.flush(WAIT).all_delivered());
    assert!(wait_until(WAIT, || batchers_and_workers() == 0));
    let rss_before = rss();
    let mut most_threads = 0;
    for h in 0..200 {
        let log = sender
            .entry_sender(Batching::new(template()))
            .expect("handle");
        for i in 0..5 {
            log.log(entry(h * 5 + i)).expect("log");
        }
        most_threads = most_threads.max(batchers_and_workers());
        drop(log);
    }
    let report = sender.flush(WAIT);
    assert!(report.all_delivered(), "{report:?}");
    // The warm-up's entry was in the first flush's report: exactly these 1000 here.
    assert_eq!(report.entries_acknowledged, 1000, "{report:?}");
    let left = wait_until(WAIT, || batchers_and_workers() == 0);
    let threads = batchers_and_workers();
    let grown = rss().saturating_sub(rss_before);
    assert!(
        left,
        "{threads} batcher and worker threads left (at most {most_threads} at once)"
    );
    assert!(
        grown < 64 << 20,
        "RSS grew by {} MiB over 200 handles",
        grown >> 20
    );
    let entries: usize = sink.received().iter().map(|p| p.logs.len()).sum();
    assert!(entries >= 1001, "the sink has {entries} entries");
    let done = sender.close();
    assert!(done.report.all_delivered(), "{:?}", done.report);
    assert_eq!(done.report.entries_acknowledged, 1001);
    assert_no_background_panic();
}

/// Item 4: while a payload struck alone is held back (1 s), `flush` still commits the
/// epoch carrying a healthy payload (`commit_interval` is 30 s: nothing else would).
#[test]
fn flush_commits_while_a_struck_payload_is_held_back() {
    let _serial = serial();
    watch_panics();
    let sink = Sink::start();
    sink.reject_payload("9-0", RpcStatusCode::INTERNAL);
    let config = fast_config(&sink.addr())
        .commit_interval(Duration::from_secs(30))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 1, 0..1);
    assert!(sender.flush(WAIT).all_delivered());
    let before = hits(Point::AfterStrike);
    let _pause = Pause::new(Point::AfterStrike, Duration::from_micros(1));
    // The poison payload and a healthy one share an epoch, which is rejected; split in
    // two, the healthy one is committed, and the poison one, rejected alone, struck.
    queue(&tx, 9, 0..1);
    queue(&tx, 1, 1..2);
    let flushes = std::thread::scope(|s| {
        // Flushes commit the healthy halves meanwhile.
        let flusher = s.spawn(|| {
            let mut n = 0;
            while hits(Point::AfterStrike) == before && n < 400 {
                sender.flush(Duration::from_millis(50));
                n += 1;
            }
            n
        });
        assert!(
            wait_until(WAIT, || hits(Point::AfterStrike) > before),
            "the poison payload was never struck"
        );
        flusher.join().expect("flusher")
    });
    let struck_at = Instant::now();
    queue(&tx, 1, 2..3);
    let report = sender.flush(Duration::from_millis(500));
    assert!(
        struck_at.elapsed() < Duration::from_millis(900),
        "the flush outlived the hold-back ({:?}): the test proves nothing",
        struck_at.elapsed()
    );
    // The poison payload is still held (struck, held back): outstanding is what the
    // flush waited for and did not see settled, the healthy payload.
    assert_eq!(report.outstanding, 1, "{report:?} after {flushes} flushes");
    assert!(
        sink.ok_ids().iter().any(|id| id == "1-2"),
        "the healthy payload was not committed: {report:?}"
    );
    drop(tx);
    drop(sender);
    assert_no_background_panic();
}

/// Item 5: `start_worker_pool` racing `shutdown`. The pool is held right after it found
/// the sender open, and the shutdown starts then: the pool's workers must be joined by
/// the shutdown, and every payload acknowledged or handed back (or left in the channel
/// when the pool was refused).
#[test]
fn a_pool_started_while_shutdown_begins_loses_nothing() {
    let _serial = serial();
    watch_panics();
    let sink = Sink::start();
    let rounds = 1000;
    // Long enough for the test thread to see the pool inside the window and start the
    // shutdown while it is there, even on a loaded machine.
    let pause = Pause::new(Point::BeforePoolSpawn, Duration::from_millis(10));
    let mut raced = 0;
    for round in 0..rounds {
        let sender = Arc::new(
            LogSender::new(fast_config(&sink.addr()).build().expect("config")).expect("sender"),
        );
        let (tx, rx) = crossbeam_channel::bounded(100);
        for seq in 0..100 {
            tx.send(payload(round, seq)).expect("queue");
        }
        drop(tx);
        let keep = rx.clone();
        let before = hits(Point::BeforePoolSpawn);
        let starter = {
            let sender = sender.clone();
            std::thread::spawn(move || sender.start_worker_pool(rx, 1))
        };
        // Shut down as soon as the pool is inside the window.
        while hits(Point::BeforePoolSpawn) == before && !starter.is_finished() {
            std::hint::spin_loop();
        }
        let inside = hits(Point::BeforePoolSpawn) > before && !starter.is_finished();
        let done = sender.shutdown(Duration::from_secs(2));
        let started = starter.join().expect("starter");
        if inside {
            raced += 1;
        }
        let left_in_channel = keep.try_iter().count() as u64;
        let settled = done.stats.acknowledged + done.report.handed_back + left_in_channel;
        assert_eq!(
            settled, 100,
            "round {round}: {started:?}, acknowledged {}, handed back {}, left {left_in_channel}",
            done.stats.acknowledged, done.report.handed_back
        );
        assert!(
            wait_until(Duration::from_secs(2), || batchers_and_workers() == 0),
            "round {round}: worker threads left: {:?}",
            logsender_threads()
        );
    }
    drop(pause);
    assert!(
        raced >= rounds / 4,
        "the shutdown began inside the window in only {raced} of {rounds} rounds"
    );
    assert_no_background_panic();
}

/// Item 6: reports count entries as well as payloads, and the final report covers the
/// sender's whole life: a dead letter reported by an earlier flush still makes it not
/// all delivered.
#[test]
fn the_final_report_covers_the_whole_life_in_entries_too() {
    let _serial = serial();
    watch_panics();
    let sink = Sink::start();
    sink.reject_payload("0-1", RpcStatusCode::INVALID_ARGUMENT);
    let (sender, tx) = sender_with_pool(fast_config(&sink.addr()).build().expect("config"), 8, 1);
    queue(&tx, 0, 0..3);
    let report = sender.flush(WAIT);
    assert_eq!(report.covers, Covers::SincePreviousReport);
    assert_eq!(
        (report.acknowledged, report.dead_lettered),
        (2, 1),
        "{report:?}"
    );
    assert_eq!(
        (report.entries_acknowledged, report.entries_dead_lettered),
        (6, 3),
        "{report:?}"
    );
    assert!(!report.all_delivered());
    // Nothing new since: the next flush says so.
    let again = sender.flush(WAIT);
    assert!(again.all_delivered(), "{again:?}");
    let stats = sender.stats();
    assert_eq!(
        (
            stats.entries_enqueued,
            stats.entries_acknowledged,
            stats.entries_dead_lettered
        ),
        (9, 6, 3)
    );
    drop(tx);
    let done = sender.close();
    assert_eq!(done.report.covers, Covers::WholeLife);
    assert_eq!(done.report.dead_lettered, 1, "{:?}", done.report);
    assert_eq!(done.report.entries_acknowledged, 6, "{:?}", done.report);
    assert!(!done.report.all_delivered(), "{:?}", done.report);
    assert_no_background_panic();
}
