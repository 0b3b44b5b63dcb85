//! Fault-matrix rows that are races: each forces its interleaving with a pause point
//! (feature `test-hooks`) and checks that the pause was really hit, so it cannot pass
//! without the race having happened. The pause points are process-wide, so the tests
//! of this file run one at a time.

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use logsender::hooks::{hits, Point};
use logsender::{DropReason, OverflowPolicy};
use support::collect::{expected_ids, ids, wait_stats, Collector};
use support::helpers::{
    assert_no_background_panic, unserved_addr, wait_until, watch_panics, within,
};
use support::sink::{Ending, Sink};
use support::{fast_config, queue, sender_with_pool, Pause};

static SERIAL: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(20);
const SLACK: Duration = Duration::from_millis(400);

/// Row 3: `close` while a worker waits for room (Block, no timeout) and the collector
/// is down. The worker is held between its "closing?" check and its wait, and `close`
/// starts right then: the closing flag and the notification must not slip through
/// that window (they are set under the lock the worker holds), or `close` never returns.
fn close_while_a_worker_waits_for_room(timeout: Option<Duration>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    watch_panics();
    let collector = Collector::new();
    let config = fast_config(&unserved_addr())
        .max_buffered_payloads(2)
        .overflow(OverflowPolicy::Block { timeout })
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let before = hits(Point::BeforeRoomWait);
    let pause = Pause::new(Point::BeforeRoomWait, Duration::from_millis(300));
    let (sender, tx) = sender_with_pool(config, 16, 1);
    let sent = queue(&tx, 0, 0..5);
    // The worker holds 2, took the 3rd, found no room, and is now inside the window.
    assert!(
        wait_until(WAIT, || hits(Point::BeforeRoomWait) > before),
        "the worker never reached its wait for room"
    );
    // (No `stats()` here: the worker holds the ledger lock through the window.)
    let reached = Instant::now();
    let t = Instant::now();
    let back = within(
        Duration::from_secs(10),
        "close during the wake-up window",
        move || sender.close_timeout(Duration::from_millis(500)).undelivered,
    );
    let took = t.elapsed();
    drop(pause);
    assert!(
        t.duration_since(reached) < Duration::from_millis(100),
        "close did not start inside the 300 ms window"
    );
    assert!(
        took < Duration::from_millis(500) + SLACK,
        "close_timeout(500 ms) took {took:?}"
    );
    // Everything comes back, including the payload the waiting worker held.
    assert_eq!(ids(&back), ids(&sent));
    assert!(
        collector.dropped_ids(DropReason::BlockTimeout).is_empty(),
        "a waiting worker dropped its payload at close"
    );
    drop(tx);
    assert_no_background_panic();
}

#[test]
fn row03_close_while_a_worker_waits_for_room_returns_in_time() {
    close_while_a_worker_waits_for_room(None);
}

#[test]
fn row03_close_hands_back_the_payload_of_a_worker_waiting_with_a_timeout() {
    close_while_a_worker_waits_for_room(Some(Duration::from_secs(10)));
}

/// Row 2, the crossing: the collector answers `OK` after reading 5 of 20 payloads
/// while the supervisor is about to half-close the epoch (held at `BeforeRotate`), so
/// the status event is queued behind the rotation. The order is read on the call
/// itself: the epoch is not acknowledged. The sink answers only that one call early
/// (`EarlyOkOnce`): had the test switched it back itself, a re-opened call could be
/// answered early while logsender half-closes it, the crossing this row forces, with
/// the payloads after the 5th then acknowledged unread (the contract, not logsender,
/// rules that out).
#[test]
fn row02_an_early_ok_crossing_the_half_close_acknowledges_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    watch_panics();
    let sink = Sink::with_ending(Ending::EarlyOkOnce(5));
    let config = fast_config(&sink.addr())
        .commit_every(20)
        .commit_interval(Duration::from_secs(30))
        .build()
        .expect("config");
    let before = hits(Point::BeforeRotate);
    let pause = Pause::new(Point::BeforeRotate, Duration::from_millis(300));
    let (sender, tx) = sender_with_pool(config, 64, 1);
    queue(&tx, 0, 0..20);
    assert!(
        wait_until(WAIT, || hits(Point::BeforeRotate) > before),
        "the epoch was never rotated"
    );
    assert!(
        sink.wait_calls(WAIT, |c| c.early_ok >= 1),
        "the sink never answered early"
    );
    let st = wait_stats(&sender, WAIT, "the early-answered epoch settled", |s| {
        s.epochs_failed >= 1
    });
    assert_eq!(
        st.acknowledged, 0,
        "an OK crossing the half-close acknowledged: {st:#?}"
    );
    drop(pause);
    assert_eq!(sender.flush(WAIT).outstanding, 0, "{:#?}", sender.stats());
    assert_eq!(sender.stats().acknowledged, 20);
    assert_eq!(sink.calls().early_ok, 1);
    // Everything acknowledged was read to the end of its call and answered after it.
    let ok: std::collections::HashSet<String> = sink.ok_ids().into_iter().collect();
    let missing: Vec<String> = expected_ids(0, 0..20)
        .into_iter()
        .filter(|id| !ok.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never read: {missing:?}"
    );
    drop(tx);
    assert!(sender.close().undelivered.is_empty());
    assert_no_background_panic();
}

/// Two `sync`s at once: the first has taken the spool's files and is still syncing them
/// (held there by the pause) when the second starts, finds nothing left to take, and
/// must not say durable before the first is done: it waits for it (before the fix it
/// returned at once, durable, with the data not yet on disk).
#[test]
fn a_sync_never_says_durable_while_another_is_still_syncing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    watch_panics();
    let dir = support::helpers::temp_path("race-sync");
    // No collector; the OS policy: only the calls below sync.
    let config = fast_config(&unserved_addr())
        .spool(&dir)
        .spool_sync(logsender::SpoolSync::Os)
        .build()
        .expect("config");
    let sender = std::sync::Arc::new(logsender::LogSender::new(config).expect("sender"));
    for seq in 0..20 {
        sender
            .send_logs(&support::payload(9, seq))
            .expect("spooled");
    }
    const HOLD: Duration = Duration::from_millis(400);
    let pause = Pause::new(Point::WhileSpoolSyncs, HOLD);
    let before = hits(Point::WhileSpoolSyncs);
    let started = Instant::now();
    let first = {
        let sender = sender.clone();
        std::thread::spawn(move || sender.sync(WAIT).expect("sync"))
    };
    assert!(
        wait_until(WAIT, || hits(Point::WhileSpoolSyncs) > before),
        "the first sync never reached its window"
    );
    // The first is inside its window now: the second finds nothing left to take.
    let second = sender.sync(WAIT).expect("sync");
    let returned = started.elapsed();
    assert_eq!(
        hits(Point::WhileSpoolSyncs),
        before + 1,
        "the second sync took files too: it found them untaken, not the race"
    );
    assert!(
        returned >= HOLD,
        "the second sync returned after {returned:?}, while the first was still syncing"
    );
    assert!(second.durable, "{second:?}");
    drop(pause);
    assert!(first.join().expect("first sync").durable);
    assert_no_background_panic();
    drop(sender);
    let _ = std::fs::remove_dir_all(&dir);
}
