//! TLS and mutual TLS against a real grpcio TLS server on 127.0.0.1, and the typed
//! errors for TLS material that is missing, not PEM, or simply the wrong CA. Every case
//! that talks to a server runs on both wires (`both_wires!`); the TLS files' own errors
//! are the builder's, the same for both.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logsender::{
    Config, ConfigBuilder, ConnectionState, DialCause, DialFailedEvent, Error, EventHandler,
    LogSender, Wire,
};
use support::helpers::{wait_connected, wait_until};
use support::sink::{Sink, TlsServer};
use support::{fast_config_on, id_of, payload, queue, sender_with_pool};

fn tls_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(tls_file(name)).expect("test TLS file")
}

/// `fast_config` is plaintext; TLS builders start from scratch with the same timings,
/// speaking `wire`.
fn tls_config(addr: &str, wire: Wire) -> logsender::ConfigBuilder {
    Config::builder(addr)
        .wire(wire)
        .compression(logsender::Compression::None)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(2))
        .commit_interval(Duration::from_millis(50))
        .close_timeout(Duration::from_secs(5))
}

/// A TLS sink with the test server certificate; with `mutual`, it also asks for a
/// client certificate chained to the test CA.
fn tls_sink(mutual: bool) -> Sink {
    Sink::start_tls(TlsServer {
        cert: read("server.pem"),
        key: read("server-key.pem"),
        client_ca: mutual.then(|| read("ca.pem")),
    })
}

#[derive(Default)]
struct Dials(Mutex<Vec<DialFailedEvent>>);

impl EventHandler for Dials {
    fn on_dial_failed(&self, event: &DialFailedEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

/// Starts a sender with `builder`, waits for a failed dial and checks that it and
/// `last_error` name a TLS failure with a hint containing `hint`.
fn assert_tls_dial_fails_with_hint(builder: ConfigBuilder, hint: &str) {
    let dials = Arc::new(Dials::default());
    let sender = LogSender::new(builder.event_handler(dials.clone()).build().unwrap()).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !dials
            .0
            .lock()
            .unwrap()
            .is_empty()),
        "no failed dial: {:?}",
        sender.stats()
    );
    let event = dials.0.lock().unwrap()[0].clone();
    assert_eq!(event.cause(), DialCause::Tls, "{event:?}");
    assert!(event.hint().is_some_and(|h| h.contains(hint)), "{event:?}");
    let last = sender
        .stats()
        .last_error
        .expect("a connection error is recorded");
    assert_eq!(last.cause, Some(DialCause::Tls), "{last:?}");
    assert!(
        last.hint.as_deref().is_some_and(|h| h.contains(hint)),
        "{last:?}"
    );
    assert!(last.to_string().contains(hint), "{last}");
    assert!(sender.close().undelivered.is_empty());
}

fn ship_and_check(sink: &Sink, config: Config) {
    let wire = config.wire();
    let (sender, tx) = sender_with_pool(config, 64, 2);
    queue(&tx, 0, 0..50);
    assert_eq!(sender.flush(Duration::from_secs(10)).outstanding, 0);
    assert!(sender.close().undelivered.is_empty());
    let mut ids: Vec<String> = sink.received().iter().map(id_of).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    sink.assert_spoke(wire);
}

both_wires! {
fn tls_with_a_private_ca(wire: Wire) {
    let sink = tls_sink(false);
    let config = tls_config(&sink.addr(), wire)
        .tls_ca_file(tls_file("ca.pem"))
        .build()
        .unwrap();
    ship_and_check(&sink, config);
}
}

both_wires! {
fn mutual_tls(wire: Wire) {
    let sink = tls_sink(true);
    let config = tls_config(&sink.addr(), wire)
        .tls_ca_file(tls_file("ca.pem"))
        .tls_client_identity(tls_file("client.pem"), tls_file("client-key.pem"))
        .build()
        .unwrap();
    ship_and_check(&sink, config);
}
}

both_wires! {
fn mtls_server_refuses_a_client_without_certificate_and_nothing_is_lost(wire: Wire) {
    let sink = tls_sink(true);
    let config = tls_config(&sink.addr(), wire)
        .tls_ca_file(tls_file("ca.pem"))
        .build()
        .unwrap();
    let sender = LogSender::new(config).unwrap();
    assert!(!wait_connected(&sender, Duration::from_millis(800)));
    let p = payload(0, 1);
    assert!(matches!(sender.send_logs(&p), Err(Error::Unavailable)));
    let (tx, rx) = crossbeam_channel::bounded(8);
    sender.start_worker_pool(rx, 1).unwrap();
    tx.send(payload(0, 2)).unwrap();
    let back = sender.close_timeout(Duration::from_millis(500)).undelivered;
    assert_eq!(back.iter().map(id_of).collect::<Vec<_>>(), vec!["0-2"]);
    assert_eq!(sink.count(), 0);
}
}

both_wires! {
fn the_wrong_ca_never_connects_and_says_why(wire: Wire) {
    let sink = tls_sink(false);
    let config = tls_config(&sink.addr(), wire)
        .tls_ca_file(tls_file("other-ca.pem"))
        .build()
        .unwrap();
    let sender = LogSender::new(config).unwrap();
    assert!(!wait_connected(&sender, Duration::from_millis(800)));
    let stats = sender.stats();
    assert_eq!(stats.state, ConnectionState::Connecting);
    let last = stats.last_error.expect("a connection error is recorded");
    assert!(last.message.contains(&sink.addr()), "{last}");
    assert_eq!(last.cause, Some(logsender::DialCause::Tls), "{last:?}");
    assert!(last.recovered_at.is_none());
    assert!(sender.close().undelivered.is_empty());
    assert_eq!(sink.count(), 0);
}
}

both_wires! {
fn plaintext_client_against_a_tls_server_does_not_connect(wire: Wire) {
    let sink = tls_sink(false);
    let sender = LogSender::new(fast_config_on(&sink.addr(), wire).build().unwrap()).unwrap();
    assert!(!wait_connected(&sender, Duration::from_millis(800)));
    assert!(sender.close().undelivered.is_empty());
}
}

#[test]
fn missing_and_malformed_tls_files_are_typed_errors() {
    let addr = "127.0.0.1:50051";
    match Config::builder(addr)
        .tls_ca_file("/nonexistent/ca.pem")
        .build()
    {
        Err(Error::Tls { path, reason }) => {
            assert_eq!(path, PathBuf::from("/nonexistent/ca.pem"));
            assert!(reason.contains("cannot read"), "{reason}");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // A key where a certificate belongs.
    match Config::builder(addr)
        .tls_ca_file(tls_file("client-key.pem"))
        .build()
    {
        Err(Error::Tls { path, .. }) => assert!(path.ends_with("client-key.pem")),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // A certificate where the key belongs.
    match Config::builder(addr)
        .tls_client_identity(tls_file("client.pem"), tls_file("client.pem"))
        .build()
    {
        Err(e @ Error::Tls { .. }) => assert!(e.to_string().contains("PRIVATE KEY"), "{e}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // Plaintext and TLS files together is a contradiction, not a silent choice.
    assert!(matches!(
        Config::builder(addr)
            .plaintext()
            .tls_ca_file(tls_file("ca.pem"))
            .build(),
        Err(Error::InvalidConfig { .. })
    ));
}

both_wires! {
fn a_server_name_not_in_the_certificate_says_to_set_tls_server_name(wire: Wire) {
    let sink = tls_sink(false);
    // server.pem is for `localhost` and 127.0.0.1 only.
    let builder = tls_config(&sink.addr(), wire)
        .tls_ca_file(tls_file("ca.pem"))
        .tls_server_name("collector.example");
    assert_tls_dial_fails_with_hint(
        builder,
        "set `tls_server_name` to a name in the collector's certificate",
    );
    assert_eq!(sink.count(), 0);
}
}

both_wires! {
fn the_wrong_ca_says_to_give_the_collectors_ca(wire: Wire) {
    let sink = tls_sink(false);
    let builder = tls_config(&sink.addr(), wire).tls_ca_file(tls_file("other-ca.pem"));
    assert_tls_dial_fails_with_hint(builder, "give the collector's CA with `tls_ca_file`");
    assert_eq!(sink.count(), 0);
}
}
