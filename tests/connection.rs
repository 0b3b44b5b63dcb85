//! Connection state you can act on: every failed dial is an event with its cause and the
//! delay before the next try; `last_error` has a time and is marked recovered once a
//! stream is up; `wait_connected`; and the gRPC core never writes to stderr.

mod support;

use std::net::{TcpListener, UdpSocket};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use logsender::{
    Config, ConfigBuilder, DialCause, DialFailedEvent, Error, EventHandler, LogSender,
};
use support::helpers::{free_port, wait_until, watch_panics};
use support::sink::{Ending, Sink};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Dials(Mutex<Vec<DialFailedEvent>>);

impl EventHandler for Dials {
    fn on_dial_failed(&self, event: &DialFailedEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

fn builder(addr: &str) -> ConfigBuilder {
    Config::builder(addr)
        .thread_name(support::helpers::thread_prefix())
        .connect_timeout(Duration::from_millis(500))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .close_timeout(Duration::from_secs(2))
}

/// A DNS server on loopback that answers every query "no such name" (NXDOMAIN), so a
/// name can fail to resolve without a query leaving the machine.
fn nxdomain_server() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let port = socket.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            let mut answer = buf[..n].to_vec();
            answer[2] = 0x81; // a response, recursion desired
            answer[3] = 0x83; // recursion available, NXDOMAIN
            let _ = socket.send_to(&answer, from);
        }
    });
    port
}

/// A peer that accepts TCP connections and never says a word.
fn silent_peer() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    addr
}

/// Starts a sender with `config`'s builder and the dial recorder; waits for two failed
/// dials and checks that both carry `cause`, a hint containing `hint`, a delay, and
/// consecutive attempt numbers, and that `last_error` has the same cause and hint.
fn assert_dials_fail_with(builder: ConfigBuilder, cause: DialCause, hint: &str) -> LogSender {
    let dials = Arc::new(Dials::default());
    let sender = LogSender::new(builder.event_handler(dials.clone()).build().unwrap()).unwrap();
    assert!(
        wait_until(WAIT, || dials.0.lock().unwrap().len() >= 2),
        "fewer than two failed dials reported: {:?}",
        sender.stats()
    );
    let seen = dials.0.lock().unwrap().clone();
    for (i, event) in seen.iter().enumerate() {
        assert_eq!(event.cause(), cause, "{event:?}");
        assert_eq!(event.attempt() as usize, i + 1, "{seen:?}");
        assert!(event.retry_in() > Duration::ZERO, "{event:?}");
        assert!(!event.message().is_empty());
        assert!(event.hint().is_some_and(|h| h.contains(hint)), "{event:?}");
    }
    let last = sender.stats().last_error.expect("last_error");
    assert_eq!(last.cause, Some(cause), "{last:?}");
    assert!(
        last.hint.as_deref().is_some_and(|h| h.contains(hint)),
        "{last:?}"
    );
    assert!(last.to_string().contains(hint), "{last}");
    assert!(last.at <= SystemTime::now() && last.recovered_at.is_none());
    match sender.wait_connected(Duration::from_millis(100)) {
        Err(Error::NotConnected {
            last_error: Some(e),
            ..
        }) => assert_eq!(e.cause, Some(cause)),
        other => panic!("{other:?}"),
    }
    println!("{cause:?}: {}", seen[0].message());
    sender
}

#[test]
fn tls_against_a_plaintext_collector_is_named_a_tls_failure() {
    watch_panics();
    let sink = Sink::start();
    let sender = assert_dials_fail_with(
        builder(&sink.addr()),
        DialCause::Tls,
        "the collector may be plaintext: use `.plaintext()`",
    );
    let message = sender
        .stats()
        .last_error
        .unwrap()
        .message
        .to_ascii_lowercase();
    assert!(
        message.contains("ssl") || message.contains("handshake"),
        "{message}"
    );
    sender.close();
}

both_wires! {
/// The dial is the link's, whichever wire runs on it: its events and `last_error` are
/// the same on both.
fn a_refused_port_is_named_refused_and_recovery_is_marked(wire: Wire) {
    watch_panics();
    let port = free_port();
    let sender = assert_dials_fail_with(
        builder(&format!("127.0.0.1:{port}")).plaintext().wire(wire),
        DialCause::Refused,
        &format!("nothing listens on 127.0.0.1:{port}: is the collector running?"),
    );
    let sink = Sink::start_with(port, Ending::OkNoMessage, None);
    sender
        .wait_connected(WAIT)
        .expect("connects once the collector is up");
    let last = sender.stats().last_error.expect("kept, as history");
    assert_eq!(last.cause, Some(DialCause::Refused));
    let recovered = last.recovered_at.expect("marked recovered");
    assert!(recovered >= last.at);
    assert!(last.to_string().contains("recovered"), "{last}");
    // Already up: returns at once.
    sender.wait_connected(Duration::ZERO).expect("up");
    drop(sink);
    sender.close();
}
}

#[test]
fn an_unresolvable_name_is_named_a_resolution_failure() {
    watch_panics();
    // The resolver asks the loopback DNS server given in the target's authority.
    let dns = nxdomain_server();
    let addr = format!("dns://127.0.0.1:{dns}/collector.invalid:50051");
    let sender = assert_dials_fail_with(
        builder(&addr).plaintext(),
        DialCause::NameResolution,
        &format!("the host name in {addr} does not resolve"),
    );
    sender.close();
}

#[test]
fn a_peer_that_never_answers_is_named_a_timeout() {
    watch_panics();
    let addr = silent_peer();
    let sender = assert_dials_fail_with(
        builder(&addr).plaintext(),
        DialCause::Timeout,
        &format!("{addr} did not complete a gRPC connection within `connect_timeout`"),
    );
    sender.close();
}

both_wires! {
fn wait_connected_returns_once_a_stream_is_up(wire: Wire) {
    let sink = Sink::start();
    let config = builder(&sink.addr()).plaintext().wire(wire).build().unwrap();
    let sender = LogSender::new(config).unwrap();
    sender.wait_connected(WAIT).expect("connects");
    assert!(sender.stats().last_error.is_none());
    let closer = Arc::new(sender);
    closer.shutdown(Duration::from_secs(1));
    assert!(matches!(
        closer.wait_connected(Duration::from_secs(1)),
        Err(Error::Closed)
    ));
}
}

/// What the child run prints on stdout when it saw every failure it provokes.
const CHILD_DONE: &str = "child: saw Tls, Refused, NameResolution";

/// Run as a child process by `the_grpc_core_never_writes_to_stderr` (and skipped
/// otherwise): provokes a TLS mismatch, a refused port and a resolution failure with no
/// logger installed.
#[test]
fn child_provokes_dial_failures_without_a_logger() {
    if std::env::var_os("LOGSENDER_STDERR_CHILD").is_none() {
        return;
    }
    // The senders come first, as in a program whose first use of gRPC is logsender:
    // the sink is a gRPC server too, and the core would print for it before that.
    let sink_port = free_port();
    let dns = nxdomain_server();
    let dials = Arc::new(Dials::default());
    let senders: Vec<LogSender> = [
        builder(&format!("127.0.0.1:{sink_port}")),
        builder(&format!("127.0.0.1:{}", free_port())).plaintext(),
        builder(&format!("dns://127.0.0.1:{dns}/collector.invalid:50051")).plaintext(),
    ]
    .into_iter()
    .map(|b| LogSender::new(b.event_handler(dials.clone()).build().unwrap()).unwrap())
    .collect();
    let _sink = Sink::start_with(sink_port, Ending::OkNoMessage, None);
    let causes = || {
        let seen = dials.0.lock().unwrap();
        [
            DialCause::Tls,
            DialCause::Refused,
            DialCause::NameResolution,
        ]
        .iter()
        .all(|c| seen.iter().filter(|e| e.cause() == *c).count() >= 2)
    };
    assert!(wait_until(WAIT, causes), "{:?}", dials.0.lock().unwrap());
    for sender in senders {
        sender.close();
    }
    println!("{CHILD_DONE}");
}

#[test]
fn the_grpc_core_never_writes_to_stderr() {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([
            "--exact",
            "child_provokes_dial_failures_without_a_logger",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LOGSENDER_STDERR_CHILD", "1")
        // The core's own switches for more output: they must not reach stderr either.
        .env("GRPC_VERBOSITY", "DEBUG")
        .env("GRPC_TRACE", "handshaker,tcp")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(CHILD_DONE),
        "the child did not provoke the failures:\n{stdout}"
    );
    assert!(stderr.is_empty(), "the child wrote to stderr:\n{stderr}");
}

/// One record seen by [`Capture`]: target, level, file, message.
type Seen = (String, log::Level, Option<String>, String);

/// A logger that keeps every record, at every level.
struct Capture(Mutex<Vec<Seen>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        self.0.lock().unwrap().push((
            record.target().to_string(),
            record.level(),
            record.file().map(str::to_string),
            record.args().to_string(),
        ));
    }

    fn flush(&self) {}
}

/// What the logging child prints on stdout when its checks passed.
const LOG_CHILD_DONE: &str = "child: the core logs under logsender::grpc";

/// Run as a child process by `the_grpc_core_logs_under_its_own_target_below_info` (and
/// skipped otherwise): with a logger capturing everything at `trace`, provokes a TLS
/// mismatch, a refused port and a resolution failure, then checks the records.
#[test]
fn child_logs_dial_failures_at_trace() {
    if std::env::var_os("LOGSENDER_LOG_CHILD").is_none() {
        return;
    }
    let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
    log::set_logger(capture).expect("the only logger");
    log::set_max_level(log::LevelFilter::Trace);
    // The senders come first, so every record of the core reaches the logger.
    let sink_port = free_port();
    let dns = nxdomain_server();
    let dials = Arc::new(Dials::default());
    let senders: Vec<LogSender> = [
        builder(&format!("127.0.0.1:{sink_port}")),
        builder(&format!("127.0.0.1:{}", free_port())).plaintext(),
        builder(&format!("dns://127.0.0.1:{dns}/collector.invalid:50051")).plaintext(),
    ]
    .into_iter()
    .map(|b| LogSender::new(b.event_handler(dials.clone()).build().unwrap()).unwrap())
    .collect();
    let _sink = Sink::start_with(sink_port, Ending::OkNoMessage, None);
    let each_twice = || {
        let seen = dials.0.lock().unwrap();
        [
            DialCause::Tls,
            DialCause::Refused,
            DialCause::NameResolution,
        ]
        .iter()
        .all(|c| seen.iter().filter(|e| e.cause() == *c).count() >= 2)
    };
    assert!(
        wait_until(WAIT, each_twice),
        "{:?}",
        dials.0.lock().unwrap()
    );
    // Joined: no dial fails (and no line is logged) past this point.
    for sender in senders {
        sender.close();
    }
    let records = capture.0.lock().unwrap().clone();
    // The core's records are the ones logged from its C/C++ sources.
    let from_core = |file: &Option<String>| {
        file.as_deref()
            .is_some_and(|f| [".cc", ".c", ".h"].iter().any(|e| f.ends_with(e)))
    };
    let core: Vec<&Seen> = records.iter().filter(|r| from_core(&r.2)).collect();
    assert!(
        !core.is_empty(),
        "no record from the gRPC core: {records:#?}"
    );
    for r in &core {
        assert_eq!(r.0, "logsender::grpc", "{r:?}");
        assert!(r.1 >= log::Level::Debug, "a core record above debug: {r:?}");
    }
    assert!(
        records
            .iter()
            .all(|r| r.0 != "logsender::grpc" || from_core(&r.2)),
        "only the core logs under logsender::grpc"
    );
    // logsender's own warn lines: one per failed dial, each with its hint (the three
    // senders' lines and events may interleave differently: compare them sorted).
    let warns: Vec<&Seen> = records
        .iter()
        .filter(|r| r.0.starts_with("logsender") && r.1 <= log::Level::Warn)
        .collect();
    let mut warned: Vec<String> = warns
        .iter()
        .map(|r| {
            assert_eq!(r.1, log::Level::Warn, "{r:?}");
            let (line, _) = r.3.rsplit_once("; next attempt in").expect("a retry line");
            let (_, hint) = line.split_once(" (hint: ").expect("a hint");
            hint.strip_suffix(')').expect("a hint").to_string()
        })
        .collect();
    let dials = dials.0.lock().unwrap();
    let mut hinted: Vec<String> = dials
        .iter()
        .map(|d| d.hint().expect("a hint").to_string())
        .collect();
    warned.sort();
    hinted.sort();
    assert_eq!(warned, hinted, "{warns:#?}\n{dials:#?}");
    println!("{LOG_CHILD_DONE}: {} core records", core.len());
}

#[test]
fn the_grpc_core_logs_under_its_own_target_below_info() {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([
            "--exact",
            "child_logs_dial_failures_at_trace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LOGSENDER_LOG_CHILD", "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(LOG_CHILD_DONE),
        "the child did not run its checks:\n{stdout}"
    );
}
