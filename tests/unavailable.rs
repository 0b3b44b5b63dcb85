//! Errors the caller sees directly: `send_logs` with no stream up, a payload over the
//! size limit, a malformed collector address, unusable TLS files.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use logsender::{Config, ConnectionState, Error, LogEntry, LogPayload, LogSender};
use support::helpers::{
    assert_no_background_panic, free_port, temp_path, wait_until, watch_panics, within,
};
use support::sink::{Ending, Sink};
use support::{fast_config, payload};

const BOUND: Duration = Duration::from_secs(15);
/// A hang guard for calls documented to return "at once"; not a benchmark.
const AT_ONCE: Duration = Duration::from_secs(2);

fn close(sender: Arc<LogSender>) -> Vec<LogPayload> {
    let sender = Arc::try_unwrap(sender).expect("the sender is still shared");
    within(BOUND, "close", move || sender.close().undelivered)
}

#[test]
fn send_logs_without_a_stream_is_unavailable_then_works_once_the_sink_is_up() {
    watch_panics();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let sender = Arc::new(LogSender::new(fast_config(&addr).build().unwrap()).unwrap());

    // Right after `new` (still dialing) and after dials have failed: at once, Unavailable.
    for attempt in 0..5 {
        let p = payload(3, attempt);
        let copy = p.clone();
        let s2 = sender.clone();
        let (result, p) = within(AT_ONCE, "send_logs with no server", move || {
            let r = s2.send_logs(&p);
            (r, p)
        });
        assert!(
            matches!(result, Err(Error::Unavailable)),
            "attempt {attempt}: expected Unavailable, got {result:?}"
        );
        assert_eq!(p, copy, "the caller's payload was altered");
        let s = sender.stats();
        assert_eq!(s.unacked, 0, "a refused payload must not be kept: {s:?}");
        assert_eq!(s.unacked_bytes, 0, "{s:?}");
        assert_eq!(s.sent, 0, "{s:?}");
        std::thread::sleep(Duration::from_millis(60));
    }
    assert!(sender.stats().last_error.is_some(), "{:?}", sender.stats());

    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    assert!(
        wait_until(BOUND, || sender.stats().state == ConnectionState::Connected),
        "never connected: {:?}",
        sender.stats()
    );
    let p = payload(3, 100);
    sender.send_logs(&p).expect("send_logs once connected");
    let undelivered = close(sender);
    assert!(undelivered.is_empty(), "{undelivered:?}");
    assert_eq!(
        sink.received(),
        vec![p],
        "exactly the one accepted payload arrives"
    );
    assert_no_background_panic();
}

/// `Stats::enqueued` is "payloads taken in"; a payload `send_logs` refused with
/// `Unavailable` was not taken in ("nothing was kept"), so it must not be counted.
#[test]
fn refused_send_logs_is_not_counted_as_taken_in() {
    let addr = format!("127.0.0.1:{}", free_port());
    let sender = LogSender::new(fast_config(&addr).build().unwrap()).unwrap();
    for i in 0..3 {
        assert!(matches!(
            sender.send_logs(&payload(4, i)),
            Err(Error::Unavailable)
        ));
    }
    let s = sender.stats();
    assert_eq!(s.unacked, 0, "{s:?}");
    assert_eq!(
        s.enqueued, 0,
        "3 payloads refused with Unavailable were counted as enqueued: {s:?}"
    );
    assert!(sender.close().undelivered.is_empty());
}

/// A payload whose encoding is exactly `len` bytes long (searching message and source
/// lengths, since the varint length prefixes grow in steps).
fn payload_of_encoded_len(id: usize, len: usize) -> LogPayload {
    for pad in 0..8 {
        for n in 0..len {
            let p = LogPayload {
                agent_id: "agent-big".into(),
                host_id: format!("big-{id}"),
                logs: vec![LogEntry {
                    message: "x".repeat(n),
                    source: "s".repeat(pad),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let got = logsender::wire::encode(&p).len();
            if got == len {
                return p;
            }
            if got > len {
                break;
            }
        }
    }
    panic!("cannot build a payload of exactly {len} encoded bytes");
}

#[test]
fn payload_larger_than_max_message_size_is_refused_with_the_real_numbers() {
    watch_panics();
    const LIMIT: usize = 4096;
    let sink = Sink::start();
    let config = fast_config(&sink.addr())
        .max_message_size(LIMIT)
        .build()
        .unwrap();
    assert_eq!(config.max_message_size(), LIMIT);
    let sender = LogSender::new(config).unwrap();
    assert!(
        wait_until(BOUND, || sender.stats().state == ConnectionState::Connected),
        "{:?}",
        sender.stats()
    );

    let too_big = payload_of_encoded_len(1, LIMIT + 1);
    let huge = payload_of_encoded_len(2, 3 * LIMIT);
    for p in [&too_big, &huge] {
        let size = logsender::wire::encode(p).len();
        let result = sender.send_logs(p);
        match &result {
            Err(e @ Error::PayloadTooLarge { size: got, limit }) => {
                assert_eq!((*got, *limit), (size, LIMIT));
                let text = e.to_string();
                assert!(
                    text.contains(&size.to_string()) && text.contains(&LIMIT.to_string()),
                    "the message must name both numbers: {text}"
                );
            }
            other => panic!("expected PayloadTooLarge for {size} bytes, got {other:?}"),
        }
    }
    // Exactly at the limit is allowed, by logsender and by the gRPC channel.
    let at_limit = payload_of_encoded_len(3, LIMIT);
    sender
        .send_logs(&at_limit)
        .expect("a payload of exactly the limit");
    let s = sender.stats();
    assert_eq!(s.sent, 1, "{s:?}");

    let undelivered = within(BOUND, "close", move || sender.close().undelivered);
    assert!(undelivered.is_empty());
    assert_eq!(
        sink.received(),
        vec![at_limit],
        "only the payload within the limit arrives"
    );
    assert_no_background_panic();
}

#[test]
fn malformed_addresses_are_rejected_by_build() {
    for addr in [
        "localhost",
        "http://x:1",
        "https://127.0.0.1:443",
        "127.0.0.1:0",
        "",
        "127.0.0.1:",
        ":50051",
        "127.0.0.1:65536",
        "127.0.0.1:port",
        "::1:50051",
        "local host:1",
        "dns:",
    ] {
        match Config::builder(addr).plaintext().build() {
            Err(Error::InvalidAddress { addr: got, reason }) => {
                assert_eq!(got, addr);
                assert!(!reason.is_empty(), "{addr:?}: empty reason");
            }
            other => panic!("{addr:?}: expected InvalidAddress, got {other:?}"),
        }
    }
    for addr in [
        "127.0.0.1:50051",
        "localhost:1",
        "[::1]:50051",
        "dns:///collector.example:443",
        "unix:/tmp/collector.sock",
    ] {
        let config = Config::builder(addr)
            .plaintext()
            .build()
            .unwrap_or_else(|e| panic!("{addr:?} should be accepted: {e}"));
        assert_eq!(config.addr(), addr);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn expect_tls_error(result: Result<Config, Error>, path: &Path) {
    match &result {
        Err(e @ Error::Tls { path: got, reason }) => {
            assert_eq!(got, path);
            assert!(!reason.is_empty());
            assert!(
                e.to_string().contains(&path.display().to_string()),
                "the message must name the file: {e}"
            );
        }
        other => panic!("{}: expected Error::Tls, got {other:?}", path.display()),
    }
}

#[test]
fn missing_or_garbage_tls_files_are_rejected_by_build() {
    let dir = temp_path("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.pem");
    let garbage = dir.join("garbage.pem");
    write(&garbage, "this is not a certificate\n\u{1}\u{2}\n");
    let empty = dir.join("empty.pem");
    write(&empty, "");
    // PEM-shaped, so that the other file of the pair is the one that is wrong.
    let cert = dir.join("cert.pem");
    write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n",
    );
    let key = dir.join("key.pem");
    write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMIIBAA==\n-----END PRIVATE KEY-----\n",
    );

    let addr = "127.0.0.1:50051";
    for bad in [&missing, &garbage, &empty, &key] {
        // A key is not a CA bundle.
        expect_tls_error(Config::builder(addr).tls_ca_file(bad).build(), bad);
    }
    for bad in [&missing, &garbage, &key] {
        expect_tls_error(
            Config::builder(addr).tls_client_identity(bad, &key).build(),
            bad,
        );
    }
    for bad in [&missing, &garbage, &cert] {
        expect_tls_error(
            Config::builder(addr)
                .tls_client_identity(&cert, bad)
                .build(),
            bad,
        );
    }
    // The well-shaped pair is accepted (its contents are checked by TLS itself, later).
    Config::builder(addr)
        .tls_ca_file(&cert)
        .tls_client_identity(&cert, &key)
        .build()
        .expect("PEM-shaped files are accepted by build");
    std::fs::remove_dir_all(&dir).ok();
}
