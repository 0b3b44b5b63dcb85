//! `flush(timeout)` waits for what was submitted before the call: acknowledged by the
//! collector in at-least-once mode, written in at-most-once mode; with the collector
//! down it reports how many are still outstanding.

mod support;

use std::time::{Duration, Instant};

use logsender::{Config, ConnectionState, DeliveryMode, LogPayload, LogSender};
use support::collect::{assert_none_missing, expected_ids, ids, missing, wait_stats};
use support::helpers::unserved_addr;
use support::sink::Sink;
use support::{queue, sender_with_pool};

const WAIT: Duration = Duration::from_secs(15);
const MARGIN: Duration = Duration::from_millis(1_500);

/// A payload whose encoding takes tens of milliseconds (a map of 200,000 fields, about
/// 2.7 MB, under the sink's 4 MiB receive limit), so a worker is visibly busy with it
/// between taking it from the queue and handing it to the sender.
fn heavy(producer: usize, seq: usize) -> LogPayload {
    let mut p = support::payload(producer, seq);
    p.logs[0].fields = (0..200_000)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    p
}

/// Queues `n` [`heavy`] payloads of producer 0, then starts one worker on them and
/// waits until it has taken some from the queue (a worker takes up to 16 at once) and is
/// encoding them (none held yet).
/// Returns the queue's sending end.
fn start_busy_worker(sender: &LogSender, n: usize) -> crossbeam_channel::Sender<LogPayload> {
    let (tx, rx) = crossbeam_channel::bounded(100);
    let payloads: Vec<LogPayload> = (0..n).map(|s| heavy(0, s)).collect();
    for p in payloads {
        tx.send(p).expect("queue open");
    }
    sender.start_worker_pool(rx, 1).expect("workers");
    wait_stats(
        sender,
        WAIT,
        "the worker busy with the first payloads",
        |s| s.queue_depth < n as u64 && s.unacked == 0,
    );
    tx
}

/// A config towards `sink` with no commit but the ones flush asks for: commit_every and
/// commit_interval are far away.
fn flush_commits_only(sink: &Sink) -> Config {
    support::fast_config(&sink.addr())
        .commit_every(100_000)
        .commit_interval(Duration::from_secs(30))
        .build()
        .expect("config")
}

/// Sends with `send_logs`, retrying while no stream is up.
fn send_now(sender: &LogSender, p: &LogPayload) {
    let deadline = Instant::now() + WAIT;
    loop {
        match sender.send_logs(p) {
            Ok(()) => return,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("send_logs: {e}"),
        }
    }
}

#[test]
fn at_least_once_flush_returns_zero_only_after_the_collector_acknowledged() {
    let sink = Sink::start();
    let config = flush_commits_only(&sink);
    let (sender, tx) = sender_with_pool(config, 1_000, 4);
    wait_stats(&sender, WAIT, "connected", |s| {
        s.state == ConnectionState::Connected
    });

    let mut submitted: Vec<String> = Vec::new();
    for round in 0..5 {
        queue(&tx, round, 0..200);
        submitted.extend(expected_ids(round, 0..200));
        for seq in 0..3 {
            let p = support::payload(100 + round, seq);
            send_now(&sender, &p);
            submitted.push(support::id_of(&p));
        }
        let left = sender.flush(WAIT).outstanding;
        // Read what the collector has and what the sender counts at that very moment.
        let got = ids(&sink.received());
        let st = sender.stats();
        let calls = sink.calls();
        assert_eq!(left, 0, "round {round}: flush timed out; {st:#?}");
        let lost = missing(&submitted, &got);
        assert!(
            lost.is_empty(),
            "round {round}: flush returned 0 but the collector lacks {} payloads submitted \
             before it (first few: {:?}); {st:#?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        assert!(
            st.acknowledged >= submitted.len() as u64,
            "round {round}: flush returned 0 with {} acknowledged of {}; {st:#?}",
            st.acknowledged,
            submitted.len()
        );
        assert!(
            calls.ok > round as u64,
            "round {round}: no epoch was answered OK: {calls:?}"
        );
        // The one-load accessor agrees with the snapshot (nothing is in flight now).
        assert_eq!(sender.acknowledged(), sender.stats().acknowledged);
    }
    drop(tx);
    assert!(sender
        .close_timeout(Duration::from_secs(5))
        .undelivered
        .is_empty());
}

#[test]
fn at_most_once_flush_returns_zero_once_written() {
    let sink = Sink::start();
    let config = support::fast_config(&sink.addr())
        .delivery(DeliveryMode::AtMostOnce)
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 1_000, 4);
    wait_stats(&sender, WAIT, "connected", |s| {
        s.state == ConnectionState::Connected
    });

    queue(&tx, 0, 0..300);
    let left = sender.flush(WAIT).outstanding;
    let st = sender.stats();
    assert_eq!(left, 0, "{st:#?}");
    assert!(
        st.sent >= 300 && st.acknowledged >= 300,
        "flush returned before all were written: {st:#?}"
    );
    // Written, not committed: at-most-once never half-closes its one stream.
    assert_eq!(sink.calls().half_closed, 0, "{:?}", sink.calls());
    assert!(sink.wait_for(300, WAIT), "only {} arrived", sink.count());
    let want = expected_ids(0, 0..300);
    assert_none_missing(&want, &ids(&sink.received()));
    drop(tx);
    assert!(sender
        .close_timeout(Duration::from_secs(5))
        .undelivered
        .is_empty());
}

#[test]
fn collector_down_flush_returns_the_number_outstanding() {
    const N: usize = 7;
    let config = support::fast_config(&unserved_addr())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 100, 1);
    queue(&tx, 0, 0..N);
    let timeout = Duration::from_millis(300);
    let t = Instant::now();
    let left = sender.flush(timeout).outstanding;
    let took = t.elapsed();
    assert_eq!(
        left, N as u64,
        "flush with the collector down must report all {N} as outstanding"
    );
    assert!(took >= timeout, "flush gave up early: {took:?}");
    assert!(
        took <= timeout + MARGIN,
        "flush overran its timeout: {took:?}"
    );
    // And again, once everything sits in the sender's buffer.
    wait_stats(&sender, WAIT, "the queue drained", |s| s.queue_depth == 0);
    assert_eq!(sender.flush(timeout).outstanding, N as u64);
    drop(tx);
    assert_eq!(
        ids(&sender.close_timeout(Duration::from_millis(300)).undelivered),
        expected_ids(0, 0..N)
    );
}

/// A payload a worker has already taken from the queue but is still encoding was
/// submitted before `flush`, so flush must count it (collector down: all outstanding).
#[test]
fn flush_counts_a_payload_a_worker_is_still_encoding() {
    const N: usize = 4;
    let config = support::fast_config(&unserved_addr())
        .build()
        .expect("config");
    let sender = LogSender::new(config).expect("sender");
    let tx = start_busy_worker(&sender, N);
    let left = sender.flush(Duration::from_millis(300)).outstanding;
    assert_eq!(
        left, N as u64,
        "flush lost track of the payload in the worker's hands"
    );
    drop(tx);
    let back = sender.close_timeout(Duration::from_millis(300)).undelivered;
    assert_eq!(ids(&back), expected_ids(0, 0..N));
}

/// The same with the collector up: flush must not return 0 before the payload that was
/// in a worker's hands when flush began has been acknowledged.
#[test]
fn flush_waits_for_a_payload_a_worker_is_still_encoding() {
    const N: usize = 3;
    let sink = Sink::start();
    let config = flush_commits_only(&sink);
    let sender = LogSender::new(config).expect("sender");
    wait_stats(&sender, WAIT, "connected", |s| {
        s.state == ConnectionState::Connected
    });
    let tx = start_busy_worker(&sender, N);
    let left = sender.flush(Duration::from_secs(30)).outstanding;
    let got = ids(&sink.received());
    let st = sender.stats();
    assert_eq!(left, 0, "{st:#?}");
    let lost = missing(&expected_ids(0, 0..N), &got);
    assert!(
        lost.is_empty(),
        "flush returned 0 while {lost:?} (submitted before it) had not reached the collector; \
         {st:#?}"
    );
    assert!(st.acknowledged >= N as u64, "{st:#?}");
    drop(tx);
    assert!(sender
        .close_timeout(Duration::from_secs(5))
        .undelivered
        .is_empty());
}
