//! The memory bound and its overflow policies, with the collector down: exact counts,
//! the right payloads dropped (and reported), the right ones kept and handed back by
//! `close_timeout`.

mod support;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logsender::{DropReason, LogSender, OverflowPolicy, Stats};
use support::collect::{assert_none_missing, expected_ids, ids, wait_stats, Collector};
use support::helpers::free_port;
use support::sink::{Ending, Sink};

const BOUND: usize = 10;
const PUSHED: usize = 25;
const WAIT: Duration = Duration::from_secs(15);

/// A sender with one worker (so intake order is queue order) towards `port`, holding
/// at most `BOUND` payloads, and the `PUSHED` payloads `0-0 .. 0-24` in its queue.
fn setup(
    port: u16,
    policy: OverflowPolicy,
) -> (
    LogSender,
    Arc<Collector>,
    crossbeam_channel::Sender<logsender::LogPayload>,
) {
    let collector = Collector::new();
    let config = support::fast_config(&format!("127.0.0.1:{port}"))
        .max_buffered_payloads(BOUND)
        .overflow(policy)
        .event_handler(collector.clone())
        .build()
        .expect("config");
    let sender = LogSender::new(config).expect("sender");
    let (tx, rx) = crossbeam_channel::bounded(100);
    support::queue(&tx, 0, 0..PUSHED);
    sender.start_worker_pool(rx, 1).expect("workers");
    (sender, collector, tx)
}

/// Waits until the worker has taken the whole queue and every payload is either held
/// or dropped (as counted by `dropped`), then checks that nothing moves for 100 ms.
fn settle(sender: &LogSender, dropped: impl Fn(&Stats) -> u64) -> Stats {
    let st = wait_stats(sender, WAIT, "the queue to drain", |s| {
        s.queue_depth == 0 && dropped(s) + s.unacked == PUSHED as u64
    });
    std::thread::sleep(Duration::from_millis(100));
    let again = sender.stats();
    assert_eq!(
        (dropped(&again), again.unacked, again.enqueued),
        (dropped(&st), st.unacked, st.enqueued),
        "counters still moving: {again:#?}"
    );
    assert_eq!(
        st.enqueued, PUSHED as u64,
        "every payload taken in once: {st:#?}"
    );
    st
}

/// Closing with the collector down hands back exactly `kept`, oldest first.
fn close_hands_back(sender: LogSender, kept: &[String]) {
    let t = Instant::now();
    let back = sender.close_timeout(Duration::from_millis(500)).undelivered;
    assert!(t.elapsed() < Duration::from_millis(500) + Duration::from_millis(1_500));
    assert_eq!(
        ids(&back),
        kept,
        "close_timeout must hand back exactly the kept payloads"
    );
}

/// With the collector down, `policy` drops `PUSHED - BOUND` payloads, counted by
/// `count` and reported with `reason` (no other kind of drop), namely the ids of
/// producer 0 in `dropped`; `close_timeout` hands back the ones in `kept`.
fn drops_and_keeps(
    policy: OverflowPolicy,
    reason: DropReason,
    count: fn(&Stats) -> u64,
    dropped: Range<usize>,
    kept: Range<usize>,
) {
    let (sender, collector, _tx) = setup(free_port(), policy);
    let st = settle(&sender, count);
    assert_eq!(count(&st), (PUSHED - BOUND) as u64, "{st:#?}");
    assert_eq!(st.unacked, BOUND as u64, "{st:#?}");
    assert_eq!(
        st.dropped(),
        count(&st),
        "only {reason:?} drops counted: {st:#?}"
    );
    assert_eq!(collector.dropped_ids(reason), expected_ids(0, dropped));
    assert_eq!(
        collector.dropped.lock().len(),
        PUSHED - BOUND,
        "only {reason:?} drops"
    );
    close_hands_back(sender, &expected_ids(0, kept));
}

#[test]
fn drop_newest_keeps_the_first_and_reports_the_rest() {
    drops_and_keeps(
        OverflowPolicy::DropNewest,
        DropReason::Newest,
        |s| s.dropped_newest,
        BOUND..PUSHED,
        0..BOUND,
    );
}

#[test]
fn drop_oldest_keeps_the_newest_and_reports_the_rest() {
    drops_and_keeps(
        OverflowPolicy::DropOldest,
        DropReason::Oldest,
        |s| s.dropped_oldest,
        0..PUSHED - BOUND,
        PUSHED - BOUND..PUSHED,
    );
}

#[test]
fn block_with_timeout_drops_what_found_no_room_in_time() {
    // 15 payloads wait 200 ms each: about 3 s.
    drops_and_keeps(
        OverflowPolicy::Block {
            timeout: Some(Duration::from_millis(200)),
        },
        DropReason::BlockTimeout,
        |s| s.dropped_block_timeout,
        BOUND..PUSHED,
        0..BOUND,
    );
}

/// With `Block { timeout: None }` the worker stops taking from the queue when the
/// buffer is full (the queue, and with it back-pressure on producers, grows), nothing is
/// dropped, and when the collector comes up everything arrives.
#[test]
fn block_without_timeout_holds_back_then_delivers_everything() {
    let port = free_port();
    let (sender, collector, tx) = setup(port, OverflowPolicy::Block { timeout: None });
    // BOUND held, one in the worker's hands waiting for room, the rest still queued.
    let st = wait_stats(&sender, WAIT, "the worker to stop taking", |s| {
        s.unacked == BOUND as u64 && s.queue_depth == (PUSHED - BOUND - 1) as u64
    });
    std::thread::sleep(Duration::from_millis(300));
    let again = sender.stats();
    assert_eq!(
        (again.unacked, again.queue_depth),
        (st.unacked, st.queue_depth),
        "{again:#?}"
    );
    assert_eq!(again.dropped(), 0, "{again:#?}");
    // More producers' payloads just queue up.
    support::queue(&tx, 0, PUSHED..PUSHED + 5);
    let st = sender.stats();
    assert_eq!(st.queue_depth, (PUSHED + 5 - BOUND - 1) as u64, "{st:#?}");

    // The collector comes up: everything is delivered, nothing dropped.
    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    let total = PUSHED + 5;
    let delivered = sink.wait_for(total, WAIT);
    let st = sender.stats();
    assert!(
        delivered,
        "only {} of {total} payloads arrived after the collector came up; stats {st:#?}",
        sink.count()
    );
    let st = wait_stats(&sender, WAIT, "everything acknowledged", |s| {
        s.acknowledged == total as u64 && s.unacked == 0 && s.queue_depth == 0
    });
    assert_eq!(st.dropped(), 0, "{st:#?}");
    assert!(collector.dropped.lock().is_empty());
    let got = ids(&sink.received());
    let want = expected_ids(0, 0..total);
    assert_none_missing(&want, &got);
    drop(tx);
    assert!(sender
        .close_timeout(Duration::from_secs(5))
        .undelivered
        .is_empty());
}

/// Closing while a worker waits for room (and more wait in the queue) hands back all of
/// them: the held ones, the one in the worker's hands, and the queued ones, in order.
#[test]
fn block_without_timeout_close_hands_back_everything() {
    let (sender, collector, _tx) = setup(free_port(), OverflowPolicy::Block { timeout: None });
    wait_stats(&sender, WAIT, "the worker to stop taking", |s| {
        s.unacked == BOUND as u64 && s.queue_depth == (PUSHED - BOUND - 1) as u64
    });
    close_hands_back(sender, &expected_ids(0, 0..PUSHED));
    assert!(collector.dropped.lock().is_empty());
}
