//! The two grpcio 0.13 traps logsender works around, against a real grpcio sink:
//!
//! (a) a client-streaming call that ends `OK` with no response message (the GoSight
//!     server) panics inside grpcio's `ClientCStreamReceiver`; logsender must not panic
//!     and must count the epoch as delivered;
//! (b) a server that accepts the call and never reads blocks `send` once HTTP/2 flow
//!     control is full; the supervisor must cancel the call after `write_timeout` so no
//!     writer (worker or `send_logs` caller) hangs, and everything is delivered once the
//!     server reads again.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use grpcio::{
    CallOption, ChannelBuilder, Client, EnvBuilder, GrpcSlice, MessageReader, Method, MethodType,
    WriteFlags,
};
use logsender::{ConnectionState, DeliveryMode, Error, LogPayload, LogSender};
use support::helpers::{
    assert_at_least_once, assert_close_returns_nothing, assert_connects, assert_exactly_once,
    assert_no_background_panic, wait_until, watch_panics,
};
use support::sink::{Ending, Sink};
use support::{fast_config, payload};

const BOUND: Duration = Duration::from_secs(20);

fn ser(msg: &Vec<u8>, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = GrpcSlice::from(msg.as_slice());
    Ok(())
}

fn de(mut reader: MessageReader) -> grpcio::Result<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::new();
    reader
        .read_to_end(&mut v)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(v)
}

/// What a naive client would use: `SubmitStream` as a plain client-streaming call.
const NAIVE: Method<Vec<u8>, Vec<u8>> = Method {
    ty: MethodType::ClientStreaming,
    name: logsender::SUBMIT_STREAM_PATH,
    req_mar: grpcio::Marshaller { ser, de },
    resp_mar: grpcio::Marshaller { ser, de },
};

/// Guards the premise of (a): the sink's `OkNoMessage` ending really is the one that
/// breaks grpcio's client-streaming receiver (it panics, or at least does not yield a
/// response). If this ever stops holding, (a) below no longer tests the trap.
#[test]
fn premise_ok_without_message_breaks_a_naive_client_streaming_receiver() {
    let sink = Sink::with_ending(Ending::OkNoMessage);
    let addr = sink.addr();
    let outcome = std::thread::Builder::new()
        .name("naive-client".into())
        .spawn(move || {
            let env = Arc::new(
                EnvBuilder::new()
                    .cq_count(1)
                    .name_prefix("naive-cq")
                    .build(),
            );
            let client = Client::new(ChannelBuilder::new(env).connect(&addr));
            let (mut tx, rx) = client
                .client_streaming(&NAIVE, CallOption::default())
                .expect("open call");
            let bytes = logsender::wire::encode(&payload(0, 0));
            futures_executor::block_on(async {
                tx.send((bytes, WriteFlags::default())).await.expect("send");
                tx.close().await.expect("half-close");
            });
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                futures_executor::block_on(rx)
            }))
        })
        .unwrap()
        .join()
        .expect("naive client thread");
    match outcome {
        Err(_) => {} // the documented panic
        Ok(Err(_)) => {}
        Ok(Ok(resp)) => panic!("grpcio returned a response ({resp:?}); the trap is gone"),
    }
    assert!(sink.wait_for(1, BOUND));
    assert!(sink.wait_calls(BOUND, |c| c.ok == 1));
}

/// (a) The GoSight ending, through `send_logs` and the pool: no panic, acknowledged.
#[test]
fn ok_without_message_is_success_not_a_panic() {
    watch_panics();
    let sink = Sink::with_ending(Ending::OkNoMessage);
    let config = fast_config(&sink.addr())
        .delivery(DeliveryMode::AtLeastOnce)
        .build()
        .unwrap();
    let sender = LogSender::new(config).unwrap();
    assert_connects(&sender, BOUND);
    let mut sent: Vec<LogPayload> = (0..20).map(|i| payload(1, i)).collect();
    for p in &sent {
        sender.send_logs(p).expect("send_logs");
    }
    let (tx, rx) = crossbeam_channel::bounded(200);
    sender.start_worker_pool(rx, 2).unwrap();
    for i in 0..200 {
        let p = payload(2, i);
        tx.send(p.clone()).unwrap();
        sent.push(p);
    }
    let n = sent.len() as u64;
    assert!(
        wait_until(BOUND, || sender.stats().acknowledged == n),
        "{:?}",
        sender.stats()
    );
    assert!(
        wait_until(BOUND, || sink.calls().ok >= 1
            && sender.stats().epochs_committed >= 1),
        "stats: {:?}, sink: {:?}",
        sender.stats(),
        sink.calls()
    );
    let s = sender.stats();
    assert_eq!(
        s.epochs_failed, 0,
        "an OK ending must not count as a failure: {s:?}"
    );
    assert_eq!(s.retried, 0, "{s:?}");
    assert_eq!(s.state, ConnectionState::Connected, "{s:?}");
    assert_close_returns_nothing(sender, BOUND);
    assert_exactly_once(&sent, &sink.received());
    assert_no_background_panic();
}

/// A payload of about 50 KB (not compressible by much, though compression is off).
fn big_payload(producer: usize, seq: usize) -> LogPayload {
    let mut p = payload(producer, seq);
    let mut x: u64 = ((producer as u64) << 32) | (seq as u64) | 1;
    let noise: String = (0..50_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect();
    p.logs[0].message = noise;
    p
}

/// (b) A collector that accepts the call and never reads. ~10 MB of payloads fill
/// HTTP/2 flow control; the blocked write must be released (the supervisor cancels the
/// call after `write_timeout`), a `send_logs` caller on another thread must not hang,
/// and once the collector reads again everything is delivered.
#[test]
fn stalled_reader_releases_blocked_writes_and_delivers_after_recovery() {
    watch_panics();
    const N: usize = 200;
    let sink = Sink::with_ending(Ending::StallReads);
    let config = fast_config(&sink.addr())
        .delivery(DeliveryMode::AtLeastOnce)
        .write_timeout(Duration::from_millis(500))
        .commit_timeout(Duration::from_secs(2))
        .close_timeout(BOUND)
        .build()
        .unwrap();
    let sender = Arc::new(LogSender::new(config).unwrap());
    assert_connects(&sender, BOUND);
    let (tx, rx) = crossbeam_channel::bounded(N);
    sender.start_worker_pool(rx, 2).unwrap();
    let sent: Vec<LogPayload> = (0..N).map(|i| big_payload(3, i)).collect();
    for p in &sent {
        tx.send(p.clone()).unwrap();
    }

    // Wait until every payload is taken in and a write is really stuck behind flow
    // control (a batch of up to 16 big payloads may not complete at all, so `sent` can
    // stay 0; the write watchdog's clock says it is stuck).
    assert!(
        wait_until(BOUND, || {
            let s = sender.stats();
            s.unacked == N as u64
                && s.write_stalled
                    .is_some_and(|d| d >= Duration::from_millis(200))
        }),
        "{:?}",
        sender.stats()
    );

    // Another thread calls send_logs meanwhile: each call must come back (with an
    // error or Ok); none may hang on the stream lock held by a stuck writer.
    let caller = {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            for k in 0..3 {
                let p = payload(4, k);
                let started = Instant::now();
                let result = sender.send_logs(&p);
                outcomes.push((p, result, started.elapsed()));
            }
            outcomes
        })
    };

    assert!(
        wait_until(BOUND, || sender.stats().epochs_failed >= 1),
        "the stalled call was never cancelled: {:?}",
        sender.stats()
    );
    let s = sender.stats();
    assert_eq!(
        s.acknowledged, 0,
        "nothing can be acknowledged by a stalled sink: {s:?}"
    );
    assert_eq!(s.dead_lettered, 0, "a stall is not permanent: {s:?}");
    assert_eq!(sink.count(), 0, "StallReads reads nothing");

    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done_tx.send(caller.join());
    });
    let outcomes = done_rx
        .recv_timeout(BOUND)
        .expect("send_logs hung behind a stalled write")
        .expect("send_logs caller panicked");
    let mut accepted = Vec::new();
    for (p, result, took) in outcomes {
        // A bound, not a benchmark: several write timeouts, far below "forever".
        assert!(took < Duration::from_secs(10), "send_logs took {took:?}");
        match result {
            Ok(()) => accepted.push(p),
            Err(Error::Unavailable) | Err(Error::Rpc(_)) => {}
            Err(e) => panic!("unexpected send_logs error: {e}"),
        }
    }

    // The collector reads again.
    sink.set_ending(Ending::OkNoMessage);
    sink.release();
    let total = (N + accepted.len()) as u64;
    assert!(
        wait_until(BOUND, || sender.stats().acknowledged == total),
        "not everything delivered after the stall ended: {:?}",
        sender.stats()
    );
    let s = sender.stats();
    assert!(s.retried > 0, "{s:?}");
    assert_eq!(s.dead_lettered, 0, "{s:?}");
    assert_eq!(s.dropped(), 0, "{s:?}");

    let sender = Arc::try_unwrap(sender).expect("sender still shared");
    assert_close_returns_nothing(sender, BOUND);
    let mut all = sent;
    all.extend(accepted);
    assert_at_least_once(&all, &sink.received());
    drop(tx);
    assert_no_background_panic();
}
