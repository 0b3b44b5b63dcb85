//! Deterministic, realistic payloads, shared by the throughput and encoder benches:
//! every entry with a timestamp, level, message, source, category, pid, fields, tags
//! and a `LogMeta`; every payload with a filled `Meta`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logsender::{LogEntry, LogMeta, LogPayload, Meta};

use crate::rng::Rng;

impl Rng {
    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.index(items.len())]
    }
}

const WORDS: &[&str] = &[
    "request",
    "completed",
    "upstream",
    "timeout",
    "connection",
    "reset",
    "by",
    "peer",
    "user",
    "login",
    "succeeded",
    "failed",
    "for",
    "session",
    "cache",
    "miss",
    "hit",
    "retrying",
    "in",
    "ms",
    "disk",
    "usage",
    "above",
    "threshold",
    "on",
    "/var/lib",
    "GET",
    "POST",
    "/api/v1/orders",
    "/healthz",
    "status",
    "200",
    "404",
    "503",
    "took",
    "worker",
    "started",
    "stopped",
    "queue",
    "depth",
    "flushed",
    "records",
    "to",
    "postgres",
    "replica",
    "lag",
    "seconds",
    "TLS",
    "handshake",
    "certificate",
    "expires",
];

/// A log message of varied length: mostly short lines, a few long ones (stack-trace-ish).
fn message(rng: &mut Rng) -> String {
    let words = match rng.index(10) {
        0..=5 => 3 + rng.index(7),
        6..=8 => 8 + rng.index(12),
        _ => 25 + rng.index(25),
    };
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        if rng.index(6) == 0 {
            s.push_str(&rng.next().wrapping_rem(100_000).to_string());
        } else {
            s.push_str(rng.pick(WORDS));
        }
    }
    s
}

fn map(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn entry(rng: &mut Rng, now: SystemTime, i: usize) -> LogEntry {
    let app = rng.pick(&["nginx", "api-gateway", "payments", "postgres", "sshd"]);
    let mut fields = map(&[
        ("request_id", format!("{:08x}", rng.next() as u32)),
        ("duration_ms", rng.index(5000).to_string()),
    ]);
    if rng.index(2) == 0 {
        fields.insert(
            "status".into(),
            rng.pick(&["200", "201", "404", "500"]).into(),
        );
    }
    let mut tags = map(&[("env", "prod".to_string())]);
    if rng.index(3) == 0 {
        tags.insert(
            "team".into(),
            rng.pick(&["core", "payments", "infra"]).into(),
        );
    }
    LogEntry {
        timestamp: Some(now + Duration::from_micros(i as u64 * 137)),
        level: rng
            .pick(&["info", "info", "info", "debug", "warn", "error"])
            .into(),
        message: message(rng),
        source: rng.pick(&["journald", "/var/log/syslog", "docker"]).into(),
        category: rng.pick(&["system", "http", "auth", "db"]).into(),
        pid: 1000 + rng.index(30_000) as i32,
        fields,
        tags,
        meta: Some(LogMeta {
            platform: "linux".into(),
            app_name: app.into(),
            ..Default::default()
        }),
    }
}

/// Host metadata as a GoSight agent fills it on a Kubernetes node in a cloud.
fn host_meta() -> Meta {
    Meta {
        hostname: "web-03.prod.example.internal".into(),
        ip_address: "10.20.3.17".into(),
        os: "linux".into(),
        os_version: "12.5".into(),
        kernel_version: "6.1.0-18-cloud-amd64".into(),
        architecture: "x86_64".into(),
        cloud_provider: "aws".into(),
        region: "eu-west-1".into(),
        availability_zone: "eu-west-1b".into(),
        instance_id: "i-0a1b2c3d4e5f67890".into(),
        instance_type: "m6i.large".into(),
        account_id: "123456789012".into(),
        vpc_id: "vpc-0abc1234".into(),
        subnet_id: "subnet-0def5678".into(),
        image_id: "ami-0123456789abcdef0".into(),
        container_id: "3f4e5d6c7b8a".into(),
        container_name: "api".into(),
        pod_name: "api-7d9f8c6b5-x2k4q".into(),
        namespace: "shop".into(),
        cluster_name: "prod-eu".into(),
        node_name: "ip-10-20-3-17".into(),
        container_image_name: "registry.example/api:1.42.0".into(),
        application: "shop".into(),
        environment: "production".into(),
        service: "api".into(),
        version: "1.42.0".into(),
        private_ip: "10.20.3.17".into(),
        mac_address: "0a:1b:2c:3d:4e:5f".into(),
        network_interface: "eth0".into(),
        labels: map(&[("app", "api".into()), ("tier", "backend".into())]),
        endpoint_id: "host-web-03".into(),
        platform: "debian".into(),
        platform_family: "debian".into(),
        platform_version: "12.5".into(),
        kernel_architecture: "x86_64".into(),
        virtualization_system: "kvm".into(),
        virtualization_role: "guest".into(),
        host_id: "7c1e9a52-6d0b-4f7e-9a3c-2b8d5e4f1a60".into(),
        agent_version: "0.9.3".into(),
        agent_id: "agent-7f3c2a".into(),
        tags: map(&[("owner", "platform".into())]),
        ..Default::default()
    }
}

/// Payload `variant` (a seed) with `entries` entries.
pub fn payload(entries: usize, variant: usize) -> LogPayload {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((variant as u64 + 1) * 0x1000_0001));
    let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000 + variant as u64);
    LogPayload {
        agent_id: "agent-7f3c2a".into(),
        host_id: "7c1e9a52-6d0b-4f7e-9a3c-2b8d5e4f1a60".into(),
        hostname: "web-03.prod.example.internal".into(),
        endpoint_id: "host-web-03".into(),
        timestamp: Some(now),
        logs: (0..entries).map(|i| entry(&mut rng, now, i)).collect(),
        meta: Some(host_meta()),
    }
}
