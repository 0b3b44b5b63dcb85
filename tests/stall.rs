//! A collector that stalls: epochs whose final status never comes time out and are
//! re-sent; a write blocked by a collector that never reads is released; and once the
//! collector answers again, everything arrives and is acknowledged.
//!
//! Both on both wires (`both_wires!`). On OTLP each `Export` call's deadline
//! (`commit_timeout`) bounds a stalled collector (`write_timeout` has no part there), and
//! `send_logs` does not wait for the collector: it takes the payload and returns, or
//! says `Unavailable` while the calls are down (between a call's deadline and the
//! backoff's end).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use logsender::{LogPayload, LogSender, Stats, Wire};
use support::collect::{assert_none_missing, expected_ids, ids, wait_stats, wait_writes_blocked};
use support::helpers::{wait_until, within};
use support::sink::{Ending, Sink};
use support::{queue, sender_with_pool};

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

/// The stalled collector answers `OK` again and lets go of what it holds: waits up to
/// `timeout` (`what` names the wait) until the `n` payloads `0-0 ..` of producer 0, and
/// `1-0` if it was `taken`, are all acknowledged, checks that each arrived, and returns
/// the stats that showed it.
fn answer_again_and_deliver(
    sink: &Sink,
    sender: &LogSender,
    n: usize,
    taken: bool,
    timeout: Duration,
    what: &str,
) -> Stats {
    sink.set_ending(Ending::OkNoMessage);
    sink.release();
    let total = n as u64 + u64::from(taken);
    let st = wait_stats(sender, timeout, what, |s| {
        s.acknowledged >= total && s.unacked == 0
    });
    assert_eq!(st.acknowledged, total, "{st:#?}");
    let got = ids(&sink.received());
    let mut want = expected_ids(0, 0..n);
    if taken {
        want.push("1-0".into());
    }
    assert_none_missing(&want, &got);
    st
}

fn close(sender: Arc<LogSender>) -> Vec<LogPayload> {
    let sender = Arc::try_unwrap(sender).expect("no other handle left");
    sender.close_timeout(Duration::from_secs(10)).undelivered
}

both_wires! {
fn epochs_without_a_final_status_time_out_and_are_resent(wire: Wire) {
    const N: usize = 20;
    let sink = Sink::with_ending(Ending::Stall);
    let config = support::fast_config_on(&sink.addr(), wire)
        .commit_every(10)
        .commit_timeout(Duration::from_millis(300))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 100, 2);
    let sender = Arc::new(sender);
    queue(&tx, 0, 0..N);

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
    let st = answer_again_and_deliver(
        &sink,
        &sender,
        N,
        taken,
        WAIT,
        "everything acknowledged after the stall",
    );
    assert!(st.epochs_committed > 0);
    sink.assert_spoke(wire);
    drop(tx);
    assert!(close(sender).is_empty());
}
}

both_wires! {
/// On OTLP nothing blocks a write (the collector's gRPC core reads each request whole;
/// the sink parks the call unanswered); with a `write_timeout` of a minute, the calls'
/// deadline (`commit_timeout`, 500 ms) is what must release them.
fn a_write_blocked_by_a_collector_that_never_reads_is_released(wire: Wire) {
    // ~10 MB in big payloads: far more than HTTP/2 lets into flight without reads.
    const N: usize = 40;
    const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
    let sink = Sink::with_ending(Ending::StallReads);
    let config = support::fast_config_on(&sink.addr(), wire)
        .write_timeout(if wire == Wire::GoSightStream {
            WRITE_TIMEOUT
        } else {
            Duration::from_secs(60)
        })
        .commit_timeout(Duration::from_millis(500))
        .build()
        .expect("config");
    let (sender, tx) = sender_with_pool(config, 100, 1);
    let sender = Arc::new(sender);
    for seq in 0..N {
        tx.send(support::wide_payload(0, seq)).expect("queue open");
    }
    if wire == Wire::GoSightStream {
        // Let the worker run into HTTP/2 flow control.
        wait_writes_blocked(&sink, &sender, WAIT);
    } else {
        // Calls reach the collector and end at their deadline, unanswered.
        let st = wait_stats(&sender, WAIT, "calls ended by their deadline", |s| {
            s.epochs_failed >= 2 && s.resent_after_fault > 0
        });
        assert_eq!(st.acknowledged, 0, "{st:#?}");
        assert_eq!(sink.calls().ok, 0, "{:?}", sink.calls());
        let err = st.last_error.expect("the deadline is the last error");
        assert!(err.message.contains("DEADLINE_EXCEEDED") || err.message.contains("DeadlineExceeded"), "{err:?}");
    }

    // A writer may be stuck for write_timeout, and send_logs may then meet one more
    // stuck write on the next stream before it gives up: two write timeouts, plus the
    // supervisor's 100 ms tick each, plus the margin.
    let bound = 2 * (WRITE_TIMEOUT + Duration::from_millis(100)) + MARGIN;
    let taken = send_logs_returns_within(&sender, support::payload(1, 0), bound);
    let st = sender.stats();
    println!("{st:#?}");
    assert_eq!(st.acknowledged, 0);

    answer_again_and_deliver(
        &sink,
        &sender,
        N,
        taken,
        Duration::from_secs(30),
        "everything acknowledged",
    );
    sink.assert_spoke(wire);
    drop(tx);
    assert!(close(sender).is_empty());
}
}
