//! `close_timeout(d)` keeps its deadline and hands back exactly what was not delivered,
//! whether the collector is down, stalls after reading, or never reads at all.

mod support;

use std::time::{Duration, Instant};

use logsender::{LogPayload, LogSender};
use support::collect::{expected_ids, ids, wait_stats, wait_writes_blocked};
use support::helpers::{unserved_addr, within};
use support::sink::{Ending, Sink};
use support::{queue, sender_with_pool};

const DEADLINE: Duration = Duration::from_secs(1);
const MARGIN: Duration = Duration::from_millis(1_500);
const WAIT: Duration = Duration::from_secs(15);

/// Closes with `DEADLINE` (under a hang guard) and checks the time it took.
fn close_in_time(sender: LogSender) -> Vec<LogPayload> {
    let (back, took) = within(
        DEADLINE + MARGIN + Duration::from_secs(10),
        "close_timeout",
        move || {
            let t = Instant::now();
            let back = sender.close_timeout(DEADLINE).undelivered;
            (back, t.elapsed())
        },
    );
    println!(
        "close_timeout({DEADLINE:?}) took {took:?} and handed back {}",
        back.len()
    );
    assert!(
        took <= DEADLINE + MARGIN,
        "close_timeout({DEADLINE:?}) took {took:?}"
    );
    back
}

/// Ids handed back, sorted by (producer, seq).
fn sorted(back: &[LogPayload]) -> Vec<String> {
    let mut v = ids(back);
    v.sort_by_key(|id| {
        let (p, s) = id.split_once('-').expect("id");
        (
            p.parse::<usize>().expect("p"),
            s.parse::<usize>().expect("s"),
        )
    });
    v
}

#[test]
fn collector_down_hands_back_everything_in_time() {
    const N: usize = 50;
    let config = support::fast_config(&unserved_addr())
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 100, 1);
    queue(&tx, 0, 0..N);
    wait_stats(&sender, WAIT, "the worker to take everything", |s| {
        s.queue_depth == 0 && s.unacked == N as u64
    });
    // A second queue and worker, fed just before close: handed back too.
    let (tx2, rx2) = crossbeam_channel::bounded(100);
    queue(&tx2, 1, 0..5);
    sender.start_worker_pool(rx2, 1).expect("workers");
    let back = close_in_time(sender);
    // One worker per queue: each queue's payloads come back in their order.
    let first: Vec<String> = ids(&back)
        .into_iter()
        .filter(|id| id.starts_with("0-"))
        .collect();
    assert_eq!(
        first,
        expected_ids(0, 0..N),
        "oldest first, each exactly once"
    );
    let mut want = expected_ids(0, 0..N);
    want.extend(expected_ids(1, 0..5));
    assert_eq!(sorted(&back), want, "exactly the undelivered payloads");
}

#[test]
fn collector_that_never_answers_hands_back_everything_in_time() {
    const N: usize = 50;
    let sink = Sink::with_ending(Ending::Stall);
    // commit_timeout longer than the close deadline: close must not wait for it.
    let config = support::fast_config(&sink.addr())
        .commit_every(20)
        .commit_timeout(Duration::from_secs(5))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 100, 2);
    queue(&tx, 0, 0..N);
    assert!(
        sink.wait_for(N, WAIT),
        "the collector read only {} payloads",
        sink.count()
    );
    let st = sender.stats();
    assert_eq!((st.acknowledged, st.unacked), (0, N as u64), "{st:#?}");
    let back = close_in_time(sender);
    assert_eq!(
        sorted(&back),
        expected_ids(0, 0..N),
        "exactly the unacknowledged payloads"
    );
    assert_eq!(sink.calls().ok, 0);
}

#[test]
fn collector_that_never_reads_hands_back_everything_in_time() {
    // ~10 MB: the worker's write blocks on HTTP/2 flow control while close runs, and
    // write_timeout is far beyond the close deadline. Blocked, held and still queued
    // payloads all come back.
    const N: usize = 40;
    let sink = Sink::with_ending(Ending::StallReads);
    let config = support::fast_config(&sink.addr())
        .write_timeout(Duration::from_secs(30))
        .commit_timeout(Duration::from_secs(30))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 100, 1);
    for seq in 0..N {
        tx.send(support::wide_payload(0, seq)).expect("queue open");
    }
    // The worker writes until HTTP/2 flow control blocks it; the rest stay queued.
    wait_writes_blocked(&sink, &sender, WAIT);
    let back = close_in_time(sender);
    assert_eq!(
        sorted(&back),
        expected_ids(0, 0..N),
        "exactly the unacknowledged payloads"
    );
    sink.release();
}
