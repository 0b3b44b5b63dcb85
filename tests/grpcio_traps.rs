//! The grpcio 0.13 traps logsender works around, against a real grpcio sink:
//!
//! (a) a client-streaming call that ends `OK` with no response message (the GoSight
//!     server) panics inside grpcio's `ClientCStreamReceiver`; logsender must not panic
//!     and must count the epoch as delivered;
//! (b) a server that accepts the call and never reads blocks `send` once HTTP/2 flow
//!     control is full; the supervisor must cancel the call after `write_timeout` so no
//!     writer (worker or `send_logs` caller) hangs, and everything is delivered once the
//!     server reads again;
//! (c) OTLP's unary `Export` answered `OK` with no response message panics (or fails)
//!     in grpcio's `ClientUnaryReceiver`, so the OTLP wire drives Export as a
//!     server-streaming call (the same bytes on the wire). Pinned here on raw grpcio:
//!     that call sees such an answer as a clean end of stream, reads a response message
//!     when there is one, and gets a failure's `grpc-status-details-bin` trailer (where
//!     a collector's `google.rpc.RetryInfo` travels) byte for byte in
//!     `RpcStatus::details()`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use grpcio::{CallOption, ChannelBuilder, Client, EnvBuilder, Method, MethodType, WriteFlags};
use logsender::{ConnectionState, DeliveryMode, Error, LogPayload, LogSender};
use support::helpers::{
    assert_at_least_once, assert_close_returns_nothing, assert_connects, assert_exactly_once,
    assert_no_background_panic, thread_prefix, wait_until, watch_panics,
};
use support::sink::{raw_method, Ending, Sink};
use support::{fast_config, payload};

const BOUND: Duration = Duration::from_secs(20);

/// What a naive client would use: `SubmitStream` as a plain client-streaming call.
const NAIVE: Method<Vec<u8>, Vec<u8>> =
    raw_method(MethodType::ClientStreaming, logsender::SUBMIT_STREAM_PATH);

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

// ---------------------------------------------------------------------------------------
// (c) OTLP's Export on raw grpcio: server streaming on the client, unary on the server

/// How the Export server below answers every call.
#[derive(Clone)]
enum Answer {
    /// `OK` and no response message (`UnarySink::fail(RpcStatus::ok())`).
    OkNoMessage,
    /// `OK` with these response bytes.
    Ok(Vec<u8>),
    /// This status (its details go out as `grpc-status-details-bin`).
    Fail(grpcio::RpcStatus),
}

/// The collector's side: `LogsService/Export` as a unary method, as every OTLP server
/// declares it.
const SERVER_EXPORT: Method<Vec<u8>, Vec<u8>> =
    raw_method(MethodType::Unary, logsender::otlp::EXPORT_PATH);

/// The client's side as the OTLP wire drives it: one request, then a response stream.
const STREAMING_EXPORT: Method<Vec<u8>, Vec<u8>> =
    raw_method(MethodType::ServerStreaming, logsender::otlp::EXPORT_PATH);

/// The client's side as a naive OTLP client would drive it.
const UNARY_EXPORT: Method<Vec<u8>, Vec<u8>> =
    raw_method(MethodType::Unary, logsender::otlp::EXPORT_PATH);

/// A grpcio server on 127.0.0.1 (port 0) serving only Export, answering `answer`; it
/// hands every request it reads to the test. Its and its clients' cq threads carry the
/// test's thread prefix, so `assert_no_background_panic` sees a panic on them.
struct ExportServer {
    _server: grpcio::Server,
    addr: String,
    requests: crossbeam_channel::Receiver<Vec<u8>>,
}

impl ExportServer {
    fn start(answer: Answer) -> ExportServer {
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix(format!("{}-export-server", thread_prefix()))
                .build(),
        );
        let (tx, requests) = crossbeam_channel::unbounded();
        let service = grpcio::ServiceBuilder::new()
            .add_unary_handler(
                &SERVER_EXPORT,
                move |ctx: grpcio::RpcContext<'_>,
                      request: Vec<u8>,
                      sink: grpcio::UnarySink<Vec<u8>>| {
                    let _ = tx.send(request);
                    let sent = match answer.clone() {
                        Answer::OkNoMessage => sink.fail(grpcio::RpcStatus::ok()),
                        Answer::Ok(response) => sink.success(response),
                        Answer::Fail(status) => sink.fail(status),
                    };
                    ctx.spawn(async move {
                        let _ = sent.await;
                    });
                },
            )
            .build();
        let mut server = grpcio::ServerBuilder::new(env)
            .register_service(service)
            .build()
            .expect("build export server");
        let port = server
            .add_listening_port("127.0.0.1:0", grpcio::ServerCredentials::insecure())
            .expect("bind 127.0.0.1:0");
        server.start();
        ExportServer {
            _server: server,
            addr: format!("127.0.0.1:{port}"),
            requests,
        }
    }

    /// A client on its own environment.
    fn client(&self) -> Client {
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix(format!("{}-export-client", thread_prefix()))
                .build(),
        );
        Client::new(ChannelBuilder::new(env).connect(&self.addr))
    }

    /// The one request the server read, which must be `sent`.
    fn assert_received(&self, sent: &[u8]) {
        let got = self
            .requests
            .recv_timeout(BOUND)
            .expect("the server read no request");
        assert_eq!(got, sent, "the server read other bytes than were sent");
        assert!(self.requests.try_recv().is_err(), "more than one request");
    }
}

/// Some request bytes: what the OTLP wire would send (one payload's request).
fn export_request() -> Vec<u8> {
    logsender::otlp::encode(&logsender::otlp::to_request(&payload(5, 0))).unwrap()
}

/// Everything the server-streaming Export yields: its messages, then how it ended.
fn stream_export(client: &Client, request: &[u8]) -> (Vec<Vec<u8>>, grpcio::Result<()>) {
    use futures_util::TryStreamExt;
    let mut stream = client
        .server_streaming(
            &STREAMING_EXPORT,
            &request.to_vec(),
            CallOption::default().timeout(BOUND),
        )
        .expect("start the call");
    futures_executor::block_on(async {
        let mut messages = Vec::new();
        loop {
            match stream.try_next().await {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => return (messages, Ok(())),
                Err(e) => return (messages, Err(e)),
            }
        }
    })
}

/// `varint` as protobuf writes it.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// A length-delimited field (wire type 2) by hand.
fn bytes_field(number: u64, value: &[u8]) -> Vec<u8> {
    let mut out = varint(number << 3 | 2);
    out.extend(varint(value.len() as u64));
    out.extend_from_slice(value);
    out
}

/// A varint field (wire type 0) by hand.
fn varint_field(number: u64, value: u64) -> Vec<u8> {
    let mut out = varint(number << 3);
    out.extend(varint(value));
    out
}

/// `google.rpc.Status { code, message, details: [Any { type_url:
/// "type.googleapis.com/google.rpc.RetryInfo", value: RetryInfo { retry_delay:
/// Duration { seconds: 2, nanos: 500_000_000 } } }] }`, written byte by byte (not with
/// logsender's generated types, so the test stands on its own).
fn retry_after_2_5_s(code: grpcio::RpcStatusCode, message: &str) -> Vec<u8> {
    let duration = [varint_field(1, 2), varint_field(2, 500_000_000)].concat();
    let retry_info = bytes_field(1, &duration);
    let any = [
        bytes_field(1, b"type.googleapis.com/google.rpc.RetryInfo"),
        bytes_field(2, &retry_info),
    ]
    .concat();
    let status = [
        varint_field(1, i32::from(code) as u64),
        bytes_field(2, message.as_bytes()),
        bytes_field(3, &any),
    ]
    .concat();
    // Spot-check the hand encoding where it is easy to get wrong: 500_000_000 is a
    // five-byte varint, and the Duration is 2 + 1 + 5 bytes.
    assert_eq!(varint(500_000_000), [0x80, 0xca, 0xb5, 0xee, 0x01]);
    assert_eq!(&retry_info[..2], &[0x0a, 8]);
    status
}

/// (c) A failed Export: the server-streaming call ends with the server's status, and
/// `RpcStatus::details()` holds the server's `grpc-status-details-bin` bytes exactly.
#[test]
fn server_streaming_export_failure_carries_the_status_details() {
    watch_panics();
    let code = grpcio::RpcStatusCode::RESOURCE_EXHAUSTED;
    let message = "over quota: retry in 2.5 s";
    let details = retry_after_2_5_s(code, message);
    let server = ExportServer::start(Answer::Fail(grpcio::RpcStatus::with_details(
        code,
        message.to_string(),
        details.clone(),
    )));
    let client = server.client();
    let request = export_request();
    let (messages, end) = stream_export(&client, &request);
    server.assert_received(&request);
    assert!(messages.is_empty(), "a failed call yielded {messages:?}");
    match end {
        Err(grpcio::Error::RpcFailure(status)) => {
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
            assert_eq!(
                status.details(),
                details.as_slice(),
                "the details trailer did not come through intact"
            );
        }
        other => panic!("expected the server's RESOURCE_EXHAUSTED, got {other:?}"),
    }

    // A failure without details has none (nothing left over from the call before).
    let plain = ExportServer::start(Answer::Fail(grpcio::RpcStatus::with_message(
        grpcio::RpcStatusCode::UNAVAILABLE,
        "busy".to_string(),
    )));
    match stream_export(&plain.client(), &request).1 {
        Err(grpcio::Error::RpcFailure(status)) => {
            assert_eq!(status.code(), grpcio::RpcStatusCode::UNAVAILABLE);
            assert!(status.details().is_empty(), "{:?}", status.details());
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    plain.assert_received(&request);
    assert_no_background_panic();
}

/// (c) An Export answered `OK` with no response message: the server-streaming call
/// ends cleanly with no message (no panic); one answered with a message yields it, then
/// ends.
#[test]
fn server_streaming_export_ok_without_a_message_ends_cleanly() {
    watch_panics();
    let request = export_request();
    let server = ExportServer::start(Answer::OkNoMessage);
    let (messages, end) = stream_export(&server.client(), &request);
    server.assert_received(&request);
    assert!(end.is_ok(), "{end:?}");
    assert!(messages.is_empty(), "{messages:?}");

    // An ExportLogsServiceResponse with partial_success { rejected_log_records: 3,
    // error_message: "too old" }, by hand.
    let response = bytes_field(
        1,
        &[varint_field(1, 3), bytes_field(2, b"too old")].concat(),
    );
    let server = ExportServer::start(Answer::Ok(response.clone()));
    let (messages, end) = stream_export(&server.client(), &request);
    server.assert_received(&request);
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(messages, vec![response]);
    assert_no_background_panic();
}

/// Guards the premise of (c): a plain unary client does not survive `OK` without a
/// message (grpcio unwraps the missing message reader: it panics, or at least does
/// not yield a response). If this ever stops holding, the OTLP wire could go unary.
#[test]
fn premise_ok_without_message_breaks_a_naive_unary_receiver() {
    let server = ExportServer::start(Answer::OkNoMessage);
    let client = server.client();
    let request = export_request();
    let outcome = std::thread::Builder::new()
        .name("naive-unary".into())
        .spawn(move || {
            let receiver = client
                .unary_call_async(
                    &UNARY_EXPORT,
                    &request,
                    CallOption::default().timeout(BOUND),
                )
                .expect("start the call");
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                futures_executor::block_on(receiver)
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
    assert!(
        server.requests.recv_timeout(BOUND).is_ok(),
        "no call reached the server"
    );
}
