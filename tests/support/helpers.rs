//! Small helpers shared by the core-behaviour tests: bounded waits, free ports, id
//! bookkeeping, a panic watch for logsender's threads, thread checks, temp paths.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logsender::{ConnectionState, LogPayload, LogSender};

use super::sink::Sink;
use super::{id_of, logsender_threads};

/// Polls `pred` every 5 ms until it holds or `timeout` passes; returns whether it held.
/// The timeout is only an upper bound so that a broken behaviour cannot hang a test.
pub fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pred() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A port on 127.0.0.1 that nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// `127.0.0.1:port` for a port nothing listens on right now (see [`free_port`]).
pub fn unserved_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Waits up to `timeout` for the sender to report `Connected`; returns whether it did.
pub fn wait_connected(sender: &LogSender, timeout: Duration) -> bool {
    wait_until(timeout, || {
        sender.stats().state == ConnectionState::Connected
    })
}

/// Asserts that the sender reports `Connected` within `timeout`.
pub fn assert_connects(sender: &LogSender, timeout: Duration) {
    assert!(
        wait_connected(sender, timeout),
        "never connected: {:?}",
        sender.stats()
    );
}

/// Asserts that `sink` receives `n` payloads and that the sender then counts `n`
/// acknowledged, each within `timeout`.
pub fn assert_delivered(sink: &Sink, sender: &LogSender, n: usize, timeout: Duration) {
    assert!(
        sink.wait_for(n, timeout),
        "sink got {} of {n} payloads; stats: {:?}",
        sink.count(),
        sender.stats()
    );
    assert!(
        wait_until(timeout, || sender.stats().acknowledged == n as u64),
        "not everything acknowledged: {:?}",
        sender.stats()
    );
}

/// Closes `sender` under a hang guard of `timeout` (see [`within`]) and asserts that
/// `close` handed nothing back.
pub fn assert_close_returns_nothing(sender: LogSender, timeout: Duration) {
    let before = sender.stats();
    let undelivered = within(timeout, "close", move || sender.close().undelivered);
    assert!(
        undelivered.is_empty(),
        "close returned {} payloads (stats before close: {before:?})",
        undelivered.len()
    );
}

/// How often each id (see [`id_of`]) occurs in `payloads`.
pub fn id_counts<'a>(payloads: impl IntoIterator<Item = &'a LogPayload>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for p in payloads {
        *counts.entry(id_of(p)).or_insert(0) += 1;
    }
    counts
}

/// Asserts that `got` holds every payload of `sent` exactly once, equal field for
/// field, and nothing else.
pub fn assert_exactly_once(sent: &[LogPayload], got: &[LogPayload]) {
    let counts = id_counts(got);
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicates received (first few): {dups:?}");
    assert_at_least_once(sent, got);
    assert_eq!(
        got.len(),
        sent.len(),
        "received count differs from sent count"
    );
}

/// Asserts that every payload of `sent` occurs in `got` at least once, that every copy
/// in `got` equals the payload sent with that id, and that `got` holds nothing else.
pub fn assert_at_least_once(sent: &[LogPayload], got: &[LogPayload]) {
    let by_id: HashMap<String, &LogPayload> = sent.iter().map(|p| (id_of(p), p)).collect();
    assert_eq!(
        by_id.len(),
        sent.len(),
        "test bug: ids of sent payloads are not unique"
    );
    for p in got {
        match by_id.get(&id_of(p)) {
            Some(expected) => assert_eq!(p, *expected, "payload {} arrived altered", id_of(p)),
            None => panic!("received a payload that was never sent: {}", id_of(p)),
        }
    }
    let counts = id_counts(got);
    let mut missing: Vec<&String> = by_id
        .keys()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "{} of {} payloads never arrived (first few: {:?})",
        missing.len(),
        sent.len(),
        &missing[..missing.len().min(10)]
    );
}

/// Waits up to `timeout` for every logsender thread of this process to end; returns
/// the names of those still alive at the deadline (empty when all ended).
pub fn wait_no_logsender_threads(timeout: Duration) -> Vec<String> {
    let mut left = logsender_threads();
    let deadline = Instant::now() + timeout;
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left = logsender_threads();
    }
    left
}

static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();
static NEXT_PREFIX: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static PREFIX: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The thread-name prefix of the senders this test builds with [`super::fast_config`]:
/// unique to the test once it called [`watch_panics`], `logsender` otherwise.
pub fn thread_prefix() -> String {
    PREFIX
        .with(|p| p.borrow().clone())
        .unwrap_or_else(|| "logsender".into())
}

/// Starts watching for panics on this test's logsender threads: gives the test a
/// thread-name prefix of its own (used by [`super::fast_config`]), so that a panic is
/// attributed to the test whose sender it happened in, not to any test of the process.
/// Read them with [`background_panics`]. The previous hook still runs, so the message is
/// printed.
pub fn watch_panics() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            if let Ok(mut panics) = PANICS.lock() {
                panics.push((name, info.to_string()));
            }
            previous(info);
        }));
    });
    let n = NEXT_PREFIX.fetch_add(1, Ordering::SeqCst);
    PREFIX.with(|p| *p.borrow_mut() = Some(format!("ls{n}")));
}

/// Panics seen on this test's logsender threads since [`watch_panics`], with notes.
pub fn background_panics() -> (usize, Vec<String>) {
    let prefix = format!("{}-", thread_prefix());
    let notes: Vec<String> = PANICS
        .lock()
        .map(|p| {
            p.iter()
                .filter(|(name, _)| name.starts_with(&prefix))
                .map(|(name, info)| format!("thread {name}: {info}"))
                .collect()
        })
        .unwrap_or_default();
    (notes.len(), notes)
}

/// Asserts that none of this test's logsender threads has panicked.
pub fn assert_no_background_panic() {
    let (n, notes) = background_panics();
    assert_eq!(n, 0, "panics on background threads: {notes:#?}");
}

/// A path in the temp directory unique to this process and call.
pub fn temp_path(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!(
        "logsender-test-{tag}-{}-{nanos}-{n}",
        std::process::id()
    ))
}

/// Runs `f` on a helper thread and returns its result, or panics if it has not
/// finished within `timeout` (a hang guard, not a benchmark). `what` names it in
/// the failure message.
pub fn within<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name(format!("guard: {what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn guard thread");
    match rx.recv_timeout(timeout) {
        Ok(v) => v,
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {timeout:?} (hang)")
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
            panic!("{what} panicked")
        }
    }
}

/// Runs the test `name` of this test binary as a child process, with `var=mode addr`
/// in its environment (the child reads it back with [`child_args`]); returns its
/// stdout, stderr and run time, and fails if it failed.
pub fn run_child(
    name: &str,
    var: &str,
    mode: &str,
    addr: &str,
) -> (String, String, std::time::Duration) {
    let exe = std::env::current_exe().expect("test binary");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(var, format!("{mode} {addr}"))
        .output()
        .expect("run the child");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    (stdout, stderr, took)
}

/// The mode and collector address [`run_child`] gave, when this run is its child.
pub fn child_args(var: &str) -> Option<(String, String)> {
    let v = std::env::var(var).ok()?;
    let (mode, addr) = v.split_once(' ')?;
    Some((mode.to_string(), addr.to_string()))
}

/// This process's CPU time (user + system).
pub fn cpu_time() -> std::time::Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The `key=value` pairs a child printed on its line tagged `tag` (`CHILD-TLS a=1 b=x`).
pub struct ChildLine(pub String);

impl ChildLine {
    /// The line after `tag ` in `stdout`; fails the test if there is none.
    pub fn find(stdout: &str, tag: &str) -> ChildLine {
        let prefix = format!("{tag} ");
        stdout
            .lines()
            .find_map(|l| {
                l.split_once(prefix.as_str())
                    .map(|(_, rest)| rest.to_string())
            })
            .map(ChildLine)
            .unwrap_or_else(|| panic!("no {tag} line:\n{stdout}"))
    }

    /// The value of `name` ("" if the line has none).
    pub fn field(&self, name: &str) -> String {
        let prefix = format!("{name}=");
        self.0
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(prefix.as_str()))
            .unwrap_or_default()
            .to_string()
    }

    /// The value of `name` as a number (0 if it has none).
    pub fn number(&self, name: &str) -> u64 {
        self.field(name).parse().unwrap_or(0)
    }
}
