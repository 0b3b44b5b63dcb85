//! The re-exec protocol of the bench binaries (`benches/throughput/`, `benches/bridges/`):
//! the parent runs this same binary again with a role argument, the child prints one
//! `RESULT k=v ...` line on stdout, and the parent parses it into a [`Sample`]. Also the
//! `LOGSENDER_BENCH_*` settings both read.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One repetition's metrics, as a child (or the parent) reports them.
pub type Sample = BTreeMap<String, f64>;

/// A child's report: one `RESULT` line on stdout.
pub fn print_result<K: AsRef<str>>(fields: &[(K, f64)]) {
    let line: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={v}", k.as_ref()))
        .collect();
    println!("RESULT {}", line.join(" "));
    let _ = std::io::stdout().flush();
}

/// Runs this binary with `args` and parses its `RESULT` line.
pub fn run_child(args: &[String]) -> Option<Sample> {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("RESULT "));
    if line.is_none() {
        eprintln!("bench: {args:?} gave no result ({})", out.status);
    }
    Some(
        line?
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN)))
            .collect(),
    )
}

/// A port that was free a moment ago (for a sink that starts later).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Kills this process if it hangs, so `cargo bench` always ends.
pub fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("bench client: no result after {limit:?}; giving up");
        std::process::exit(3);
    });
}

pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// `LOGSENDER_BENCH_REPS`: counted repetitions after the warm-up (at least 1).
pub fn reps() -> usize {
    env_or("LOGSENDER_BENCH_REPS", 5).max(1)
}

/// `LOGSENDER_BENCH_SCALE`: multiplies every count.
pub fn scale() -> f64 {
    env_or("LOGSENDER_BENCH_SCALE", 1.0)
}

/// `count` times `LOGSENDER_BENCH_SCALE` (at least 1).
pub fn scaled(count: usize) -> usize {
    ((count as f64 * scale()).round() as usize).max(1)
}

/// The task filter: `LOGSENDER_BENCH_FILTER`, else the first argument that is not a flag
/// (`cargo bench -- NAME`); comma-separated substrings of task names.
pub fn filter(args: &[String]) -> String {
    std::env::var("LOGSENDER_BENCH_FILTER")
        .ok()
        .or_else(|| args.iter().find(|a| !a.starts_with('-')).cloned())
        .unwrap_or_default()
}

/// Whether `filter` selects the task `name` (an empty filter selects everything).
pub fn selects(filter: &str, name: &str) -> bool {
    filter.trim().is_empty()
        || filter
            .split(',')
            .map(str::trim)
            .any(|f| !f.is_empty() && name.contains(f))
}
