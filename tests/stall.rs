//! A collector that stalls: epochs whose final status never comes time out and are
//! re-sent; a write blocked by a collector that never reads is released; and once the
//! collector answers again, everything arrives and is acknowledged.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use logsender::{LogPayload, LogSender};
use support::collect::{expected_ids, ids, missing, wait_stats};
use support::helpers::{wait_until, within};
use support::sink::{Ending, Sink};

const WAIT: Duration = Duration::from_secs(15);
const MARGIN: Duration = Duration::from_millis(1_500);

/// Calls `send_logs` from another thread; panics if it does not return within `bound`.
/// Returns whether the payload was taken (then it must arrive later).
fn send_logs_returns_within(sender: &Arc<LogSender>, payload: LogPayload, bound: Duration) -> bool {
    let s = sender.clone();
    let t = Instant::now();
    let result = within(bound, "send_logs while the collector stalls", move || {
        s.send_logs(&payload)
    });
    println!("send_logs returned {result:?} after {:?}", t.elapsed());
    match result {
        Ok(()) => true,
        Err(e) => {
            assert!(e.is_retryable(), "a stall is not a permanent error: {e}");
            false
        }
    }
}

fn close(sender: Arc<LogSender>) -> Vec<LogPayload> {
    let sender = Arc::try_unwrap(sender).expect("no other handle left");
    sender.close_timeout(Duration::from_secs(10))
}

#[test]
fn epochs_without_a_final_status_time_out_and_are_resent() {
    const N: usize = 20;
    let sink = Sink::with_ending(Ending::Stall);
    let config = support::fast_config(&sink.addr())
        .commit_every(10)
        .commit_timeout(Duration::from_millis(300))
        .build()
        .expect("config");
    let sender = Arc::new(LogSender::new(config).expect("sender"));
    let (tx, rx) = crossbeam_channel::bounded(100);
    sender.start_worker_pool(rx, 2).expect("workers");
    for seq in 0..N {
        tx.send(support::payload(0, seq)).expect("queue open");
    }

    let st = wait_stats(&sender, WAIT, "stalled epochs failing and re-sent", |s| {
        s.epochs_failed >= 2 && s.resent_after_fault > 0
    });
    assert_eq!(
        st.acknowledged, 0,
        "nothing can be acknowledged by a stalled collector: {st:#?}"
    );
    assert_eq!(st.epochs_committed, 0, "{st:#?}");
    assert_eq!(st.dead_lettered, 0, "a stall is not permanent: {st:#?}");
    assert_eq!(sink.calls().ok, 0);
    assert!(
        wait_until(WAIT, || sink.count() > N),
        "timed-out epochs must be written again (collector saw {})",
        sink.count()
    );

    // The stream lock is not held forever: send_logs from another thread returns.
    let extra = support::payload(1, 0);
    let taken = send_logs_returns_within(&sender, extra, Duration::from_secs(2) + MARGIN);
    let st = sender.stats();
    assert_eq!(
        st.unacked,
        N as u64 + u64::from(taken),
        "everything is still held: {st:#?}"
    );

    // The collector answers again: everything arrives and is acknowledged.
    sink.set_ending(Ending::OkNoMessage);
    sink.release();
    let total = N as u64 + u64::from(taken);
    let st = wait_stats(
        &sender,
        WAIT,
        "everything acknowledged after the stall",
        |s| s.acknowledged >= total && s.unacked == 0,
    );
    assert_eq!(st.acknowledged, total, "{st:#?}");
    assert!(st.epochs_committed > 0);
    let got = ids(&sink.received());
    let mut want = expected_ids(0, 0..N);
    if taken {
        want.push("1-0".into());
    }
    assert!(
        missing(&want, &got).is_empty(),
        "missing: {:?}",
        missing(&want, &got)
    );
    drop(tx);
    assert!(close(sender).is_empty());
}

#[test]
fn a_write_blocked_by_a_collector_that_never_reads_is_released() {
    // ~10 MB in big payloads: far more than HTTP/2 lets into flight without reads.
    const N: usize = 40;
    const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
    let sink = Sink::with_ending(Ending::StallReads);
    let config = support::fast_config(&sink.addr())
        .write_timeout(WRITE_TIMEOUT)
        .commit_timeout(Duration::from_millis(500))
        .build()
        .expect("config");
    let sender = Arc::new(LogSender::new(config).expect("sender"));
    let (tx, rx) = crossbeam_channel::bounded(100);
    sender.start_worker_pool(rx, 1).expect("workers");
    let big = |seq: usize| {
        let mut p = support::payload(0, seq);
        p.logs[0].message = format!("{seq}:").repeat(64 * 1024);
        p
    };
    for seq in 0..N {
        tx.send(big(seq)).expect("queue open");
    }
    assert!(
        sink.wait_calls(WAIT, |c| c.opened >= 1),
        "the sender never opened a stream"
    );
    wait_stats(&sender, WAIT, "the first writes", |s| s.sent > 0);
    // Let the worker run into HTTP/2 flow control.
    std::thread::sleep(Duration::from_millis(300));

    // A writer may be stuck for write_timeout, and send_logs may then meet one more
    // stuck write on the next stream before it gives up: two write timeouts, plus the
    // supervisor's 100 ms tick each, plus the margin.
    let bound = 2 * (WRITE_TIMEOUT + Duration::from_millis(100)) + MARGIN;
    let taken = send_logs_returns_within(&sender, support::payload(1, 0), bound);
    let st = sender.stats();
    println!("{st:#?}");
    assert_eq!(st.acknowledged, 0);

    sink.set_ending(Ending::OkNoMessage);
    sink.release();
    let total = N as u64 + u64::from(taken);
    let st = wait_stats(
        &sender,
        Duration::from_secs(30),
        "everything acknowledged",
        |s| s.acknowledged >= total && s.unacked == 0,
    );
    assert_eq!(st.acknowledged, total, "{st:#?}");
    let got = ids(&sink.received());
    let mut want = expected_ids(0, 0..N);
    if taken {
        want.push("1-0".into());
    }
    assert!(
        missing(&want, &got).is_empty(),
        "missing: {:?}",
        missing(&want, &got)
    );
    drop(tx);
    assert!(close(sender).is_empty());
}
