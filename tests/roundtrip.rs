//! Payloads with every field of every struct set arrive at a real grpcio sink exactly
//! equal to what was sent: unicode and emoji, maps with several entries (and an empty
//! key/value), timestamps with nanoseconds before and after 1970, negative and extreme
//! pids, a full `Meta` with labels and tags, `LogMeta.extra`, and "absent" versus
//! "present but empty" nested messages. Through `send_logs` and through the worker
//! pool, with and without gzip.

mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logsender::{Compression, DeliveryMode, LogEntry, LogMeta, LogPayload, LogSender, Meta};
use support::helpers::{
    assert_close_returns_nothing, assert_connects, assert_exactly_once, assert_no_background_panic,
    watch_panics,
};
use support::sink::Sink;
use support::{fast_config, sender_with_pool};

const BOUND: Duration = Duration::from_secs(15);

fn map(prefix: &str, i: usize, n: usize) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = (0..n)
        .map(|k| {
            (
                format!("{prefix}-key-{k}-ключ"),
                format!("{prefix}-value-{i}-{k}-值-🦀"),
            )
        })
        .collect();
    m.insert(String::new(), String::new());
    m.insert(
        format!("{prefix}-multi\nline"),
        "tab\there \"quoted\" \\ back".into(),
    );
    m
}

fn s(field: &str, i: usize) -> String {
    format!("{field}-{i}-héllo-世界-🚀")
}

fn full_meta(i: usize) -> Meta {
    Meta {
        hostname: s("hostname", i),
        ip_address: "10.1.2.3".into(),
        os: s("os", i),
        os_version: s("os_version", i),
        kernel_version: s("kernel_version", i),
        architecture: s("architecture", i),
        cloud_provider: s("cloud_provider", i),
        region: s("region", i),
        availability_zone: s("availability_zone", i),
        instance_id: s("instance_id", i),
        instance_type: s("instance_type", i),
        account_id: s("account_id", i),
        project_id: s("project_id", i),
        resource_group: s("resource_group", i),
        vpc_id: s("vpc_id", i),
        subnet_id: s("subnet_id", i),
        image_id: s("image_id", i),
        service_id: s("service_id", i),
        container_id: s("container_id", i),
        container_name: s("container_name", i),
        pod_name: s("pod_name", i),
        namespace: s("namespace", i),
        cluster_name: s("cluster_name", i),
        node_name: s("node_name", i),
        container_image_name: s("container_image_name", i),
        container_image_id: s("container_image_id", i),
        application: s("application", i),
        environment: s("environment", i),
        service: s("service", i),
        version: s("version", i),
        deployment_id: s("deployment_id", i),
        public_ip: "203.0.113.7".into(),
        private_ip: "192.168.0.7".into(),
        mac_address: "02:42:ac:11:00:02".into(),
        network_interface: s("network_interface", i),
        labels: map("label", i, 4),
        endpoint_id: s("endpoint_id", i),
        platform: s("platform", i),
        platform_family: s("platform_family", i),
        platform_version: s("platform_version", i),
        kernel_architecture: s("kernel_architecture", i),
        virtualization_system: s("virtualization_system", i),
        virtualization_role: s("virtualization_role", i),
        host_id: s("meta_host_id", i),
        agent_version: s("agent_version", i),
        agent_id: s("meta_agent_id", i),
        resource_id: s("resource_id", i),
        kind: s("kind", i),
        tags: map("metatag", i, 3),
    }
}

fn full_log_meta(i: usize) -> LogMeta {
    LogMeta {
        platform: s("platform", i),
        app_name: s("app_name", i),
        app_version: s("app_version", i),
        container_id: s("container_id", i),
        container_name: s("container_name", i),
        unit: s("unit", i),
        service: s("service", i),
        event_id: s("event_id", i),
        user: s("user", i),
        executable: s("executable", i),
        path: "/var/log/ünïcödé/💾.log".into(),
        extra: map("extra", i, 5),
    }
}

/// Timestamps that stress the conversion: nanoseconds, before 1970, around the epoch.
fn timestamps(i: usize) -> Vec<Option<SystemTime>> {
    vec![
        Some(UNIX_EPOCH + Duration::new(1_700_000_000 + i as u64, 999_999_999)),
        // 1940-ish with nanoseconds: seconds negative, nanos counted forward.
        Some(UNIX_EPOCH - Duration::new(946_684_800 + i as u64, 123_456_789)),
        Some(UNIX_EPOCH - Duration::from_nanos(1)),
        Some(UNIX_EPOCH - Duration::from_secs(1)),
        Some(UNIX_EPOCH),
        Some(UNIX_EPOCH + Duration::from_nanos(1)),
        Some(SystemTime::now()),
        None,
    ]
}

/// A payload with every field set; `id` goes into `host_id`, the tests' identity.
fn full_payload(id: usize) -> LogPayload {
    let pids = [-1, i32::MIN, i32::MAX, 0, 4242, -31337, 1, 7];
    let mut logs: Vec<LogEntry> = timestamps(id)
        .into_iter()
        .zip(pids)
        .enumerate()
        .map(|(k, (timestamp, pid))| LogEntry {
            timestamp,
            level: [
                "info",
                "warn",
                "error",
                "debug",
                "критично",
                "致命",
                "🔥",
                "trace",
            ][k]
                .into(),
            message: format!(
                "entry {k} of payload {id}: emoji 👩‍👩‍👧‍👦 🇸🇪, RTL עברית, NUL \u{0} here, \
                 CJK 日本語, combining e\u{301}, line\nbreak"
            ),
            source: s("source", id),
            category: s("category", id),
            pid,
            fields: map("field", id + k, 4),
            tags: map("tag", id + k, 3),
            meta: Some(full_log_meta(id + k)),
        })
        .collect();
    // "Present but empty" and "absent" must both survive.
    logs.push(LogEntry {
        meta: Some(LogMeta::default()),
        ..Default::default()
    });
    logs.push(LogEntry::default());
    LogPayload {
        agent_id: s("agent_id", id),
        host_id: format!("host-{id}"),
        hostname: s("hostname", id),
        endpoint_id: s("endpoint_id", id),
        timestamp: Some(UNIX_EPOCH - Duration::new(86_400 * 365 * 30, 500_000_001)),
        logs,
        meta: Some(full_meta(id)),
    }
}

/// A payload whose optional parts are all absent or present-but-empty.
fn sparse_payload(id: usize) -> LogPayload {
    LogPayload {
        host_id: format!("host-{id}"),
        meta: Some(Meta::default()),
        logs: vec![LogEntry::default(); 2],
        ..Default::default()
    }
}

fn payloads(range: std::ops::Range<usize>) -> Vec<LogPayload> {
    range
        .map(|i| {
            if i % 10 == 9 {
                sparse_payload(i)
            } else {
                full_payload(i)
            }
        })
        .collect()
}

#[test]
fn every_field_survives_send_logs() {
    roundtrip_send_logs(Compression::None, DeliveryMode::AtLeastOnce);
}

#[test]
fn every_field_survives_send_logs_gzip_at_most_once() {
    roundtrip_send_logs(Compression::Gzip, DeliveryMode::AtMostOnce);
}

fn roundtrip_send_logs(compression: Compression, mode: DeliveryMode) {
    watch_panics();
    let sink = Sink::start();
    let config = fast_config(&sink.addr())
        .compression(compression)
        .delivery(mode)
        .build()
        .unwrap();
    let sender = LogSender::new(config).unwrap();
    assert_connects(&sender, BOUND);
    let sent = payloads(0..40);
    for p in &sent {
        let before = p.clone();
        sender
            .send_logs(p)
            .unwrap_or_else(|e| panic!("send_logs {}: {e}", p.host_id));
        assert_eq!(p, &before, "send_logs changed the caller's payload");
    }
    assert_close_returns_nothing(sender, BOUND);
    assert!(
        sink.wait_for(sent.len(), BOUND),
        "sink got {}",
        sink.count()
    );
    let received = sink.received();
    assert_exactly_once(&sent, &received);
    assert_eq!(sink.bad_payloads(), 0);
    assert_no_background_panic();
}

#[test]
fn every_field_survives_the_worker_pool() {
    roundtrip_pool(Compression::None);
}

#[test]
fn every_field_survives_the_worker_pool_gzip() {
    roundtrip_pool(Compression::Gzip);
}

fn roundtrip_pool(compression: Compression) {
    watch_panics();
    let sink = Sink::start();
    let config = fast_config(&sink.addr())
        .compression(compression)
        .build()
        .unwrap();
    let (sender, tx) = sender_with_pool(config, 16, 3);
    let sent = payloads(100..160);
    for p in &sent {
        tx.send(p.clone()).unwrap();
    }
    drop(tx);
    assert_close_returns_nothing(sender, BOUND);
    assert_exactly_once(&sent, &sink.received());
    assert_eq!(sink.bad_payloads(), 0);
    assert_no_background_panic();
}

/// The wire bytes round-trip too (what the sink decodes is what `wire::encode` wrote),
/// and the sizes agree; a cheap guard that the test payloads really are "full".
#[test]
fn test_payload_is_really_full() {
    let p = full_payload(1);
    assert_eq!(
        logsender::wire::decode(&logsender::wire::encode(&p)).unwrap(),
        p
    );
    assert_eq!(
        logsender::wire::encoded_len(&p),
        logsender::wire::encode(&p).len()
    );
    let m = p.meta.as_ref().unwrap();
    assert!(m.labels.len() >= 4 && m.tags.len() >= 3);
    assert!(p.logs.iter().any(|e| e.pid < 0));
    assert!(p.logs.iter().any(|e| e
        .timestamp
        .is_some_and(|t| t < UNIX_EPOCH && t.duration_since(UNIX_EPOCH).is_err())));
}
