//! Shared test support: the real sink server, a killable child-process sink, and
//! payload/config helpers. Each test file uses a part of it.
#![allow(dead_code)]

pub mod child;
pub mod collect;
pub mod helpers;
pub mod proxy;
pub mod sink;

// Used by the race tests only.
#[cfg(feature = "test-hooks")]
#[allow(unused_imports)]
pub use pause::Pause;

#[cfg(feature = "test-hooks")]
mod pause {
    use std::time::Duration;

    use logsender::hooks::{set_pause, Point};

    /// Sets a pause at `point` for the life of the guard.
    pub struct Pause(Point);

    impl Pause {
        pub fn new(point: Point, d: Duration) -> Pause {
            set_pause(point, d);
            Pause(point)
        }
    }

    impl Drop for Pause {
        fn drop(&mut self) {
            set_pause(self.0, Duration::ZERO);
        }
    }
}

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logsender::{
    Batching, Compression, Config, ConfigBuilder, EventHandler, LogEntry, LogMeta, LogPayload,
    LogSender, Meta, OverflowPolicy, Wire,
};

/// Both wires, GoSight's first.
pub const WIRES: [Wire; 2] = [Wire::GoSightStream, Wire::OtlpLogs];

/// Turns one test body that takes the wire into two tests, one per wire: `name::gosight`
/// and `name::otlp` (a module per test, so each is named on failure, runs in parallel,
/// and `cargo test name` runs both). The body sees the test file's items (`use
/// super::*`).
///
/// ```ignore
/// both_wires! {
///     /// What it checks.
///     fn everything_arrives(wire: Wire) {
///         let config = fast_config_on(&sink.addr(), wire).build().unwrap();
///         // ...
///     }
/// }
/// ```
#[macro_export]
macro_rules! both_wires {
    ($(#[$attr:meta])* fn $name:ident($wire:ident: Wire) $body:block) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($wire: logsender::Wire) $body

            #[test]
            fn gosight() {
                body(logsender::Wire::GoSightStream)
            }

            #[test]
            fn otlp() {
                body(logsender::Wire::OtlpLogs)
            }
        }
    };
}

/// A sender whose entry channel stays full once a few entries are in, and batching for
/// it: collector down, room for one payload (`Block`), one entry per payload, one
/// worker, a channel of 4 entries. Nothing makes room until shutdown.
pub fn jammed(
    handler: std::sync::Arc<dyn EventHandler>,
    template: LogPayload,
) -> (LogSender, Batching) {
    let config = fast_config(&helpers::unserved_addr())
        .max_buffered_payloads(1)
        .overflow(OverflowPolicy::Block { timeout: None })
        .event_handler(handler)
        .build()
        .expect("config");
    let batching = Batching::new(template)
        .max_entries(1)
        .workers(1)
        .capacity(4);
    (LogSender::new(config).expect("sender"), batching)
}

/// A builder for a plaintext loopback sender with short, test-friendly timings.
pub fn fast_config(addr: &str) -> ConfigBuilder {
    Config::builder(addr)
        .thread_name(helpers::thread_prefix())
        .plaintext()
        .compression(Compression::None)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(2))
        .commit_interval(Duration::from_millis(50))
        .commit_timeout(Duration::from_secs(2))
        .write_timeout(Duration::from_secs(2))
        .close_timeout(Duration::from_secs(5))
}

/// [`fast_config`] speaking `wire` (the sink answers both).
pub fn fast_config_on(addr: &str, wire: Wire) -> ConfigBuilder {
    fast_config(addr).wire(wire)
}

/// A realistic payload whose identity is `agent_id = "agent-{producer}"`,
/// `host_id = "{producer}-{seq}"`.
pub fn payload(producer: usize, seq: usize) -> LogPayload {
    let mut fields = HashMap::new();
    fields.insert("request_id".to_string(), format!("req-{producer}-{seq}"));
    fields.insert("latency_ms".to_string(), (seq % 997).to_string());
    let mut tags = HashMap::new();
    tags.insert("env".to_string(), "test".to_string());
    LogPayload {
        agent_id: format!("agent-{producer}"),
        host_id: format!("{producer}-{seq}"),
        hostname: "host.example".into(),
        endpoint_id: format!("ep-{producer}"),
        timestamp: Some(UNIX_EPOCH + Duration::new(1_700_000_000 + seq as u64, 123_456_789)),
        logs: (0..3)
            .map(|i| LogEntry {
                timestamp: Some(SystemTime::now()),
                level: ["info", "warn", "error"][i % 3].into(),
                message: format!("message {i} of payload {seq} from producer {producer} ✓"),
                source: "journald".into(),
                category: "app".into(),
                pid: 4242,
                fields: fields.clone(),
                tags: tags.clone(),
                meta: Some(LogMeta {
                    platform: "linux".into(),
                    app_name: "svc".into(),
                    unit: "svc.service".into(),
                    ..Default::default()
                }),
            })
            .collect(),
        meta: Some(Meta {
            hostname: "host.example".into(),
            os: "linux".into(),
            agent_version: "0.1.0".into(),
            ..Default::default()
        }),
    }
}

/// [`payload`] with a first message of `"{seq}:"` repeated 65,536 times (a few hundred
/// KB): a few dozen of them are far more than HTTP/2 lets into flight without reads.
pub fn wide_payload(producer: usize, seq: usize) -> LogPayload {
    let mut p = payload(producer, seq);
    p.logs[0].message = format!("{seq}:").repeat(64 * 1024);
    p
}

/// Queues `payload(producer, seq)` for every `seq` in `seqs`, in order; returns
/// copies of what was queued.
pub fn queue(
    tx: &crossbeam_channel::Sender<LogPayload>,
    producer: usize,
    seqs: std::ops::Range<usize>,
) -> Vec<LogPayload> {
    seqs.map(|seq| {
        let p = payload(producer, seq);
        tx.send(p.clone()).expect("queue open");
        p
    })
    .collect()
}

/// A sender built from `config` with a pool of `workers` draining a new channel of
/// `capacity`; returns the sender and the channel's sending end.
pub fn sender_with_pool(
    config: Config,
    capacity: usize,
    workers: usize,
) -> (LogSender, crossbeam_channel::Sender<LogPayload>) {
    let sender = LogSender::new(config).expect("sender");
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    sender.start_worker_pool(rx, workers).expect("workers");
    (sender, tx)
}

/// The identity of a payload made by [`payload`].
pub fn id_of(p: &LogPayload) -> String {
    p.host_id.clone()
}

/// Names of this process's threads that belong to this test's senders (those named
/// with [`helpers::thread_prefix`]).
pub fn logsender_threads() -> Vec<String> {
    // /proc shows at most 15 bytes of a thread's name.
    let prefix: String = format!("{}-", helpers::thread_prefix())
        .chars()
        .take(15)
        .collect();
    let mut names = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for task in dir.flatten() {
            if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
                let name = name.trim().to_string();
                if name.starts_with(&prefix) {
                    names.push(name);
                }
            }
        }
    }
    names
}
