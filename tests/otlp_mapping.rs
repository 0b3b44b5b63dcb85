//! The OTLP mapping (`logsender::otlp`, documented in OTLP.md): model → OTLP → model is
//! the identity on random payloads (the wire-equivalence test's generator), every
//! `Meta` and `LogMeta` field has its documented key, levels their severities, the
//! keys GoSight's receiver reads come out right, `split` keeps its cap, and an
//! independent implementation (PyPI's `opentelemetry-proto` classes, from Python)
//! decodes what we encode.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use logsender::otlp::pb::common::{any_value::Value, AnyValue, KeyValue};
use logsender::otlp::pb::logs::{LogRecord, SeverityNumber};
use logsender::otlp::pb::logs_service::ExportLogsServiceRequest;
use logsender::otlp::{self, Chunk};
use logsender::{Level, LogEntry, LogMeta, LogPayload, Meta};
use protobuf::MessageFull;

#[path = "support/random.rs"]
mod random;

use random::{expected_back, random_payload, Rng};

fn keys_unique(attrs: &[KeyValue], what: &str) {
    let mut seen = HashSet::new();
    for a in attrs {
        assert!(seen.insert(a.key.as_str()), "{what}: key {:?} twice", a.key);
    }
}

fn resource_attrs(req: &ExportLogsServiceRequest) -> &[KeyValue] {
    &req.resource_logs[0].resource.attributes
}

fn records(req: &ExportLogsServiceRequest) -> &[LogRecord] {
    &req.resource_logs[0].scope_logs[0].log_records
}

fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.value.as_ref())
}

fn string(s: &str) -> Option<Value> {
    Some(Value::StringValue(s.to_owned()))
}

#[test]
fn model_to_otlp_and_back_is_the_identity_on_random_payloads() {
    let mut rng = Rng(0x071b_5eed_2024);
    let (mut entries, mut with_meta) = (0, 0);
    for i in 0..2000 {
        let msg = random_payload(&mut rng, false);
        let model = LogPayload::try_from(msg).expect("a valid message converts");
        let request = otlp::to_request(&model);
        keys_unique(resource_attrs(&request), "resource");
        for r in records(&request) {
            keys_unique(&r.attributes, "record");
        }
        let bytes = otlp::encode(&request).expect("encodes");
        let back = otlp::decode(&bytes).expect("decodes");
        assert_eq!(back, vec![expected_back(&model)], "payload {i}");
        // The same request twice: its bytes do not depend on a HashMap's order.
        assert_eq!(otlp::encode(&otlp::to_request(&model)).unwrap(), bytes);
        // Split under a cap it fits: one chunk, the same request.
        let chunks = otlp::split(&model, usize::MAX);
        if model.logs.is_empty() {
            assert!(chunks.is_empty());
        } else {
            assert_eq!(chunks.len(), 1);
            assert_eq!(chunks[0].request, request);
            assert_eq!(chunks[0].encoded_len, bytes.len());
        }
        entries += model.logs.len();
        with_meta += model.logs.iter().filter(|e| e.meta.is_some()).count();
    }
    assert!(entries > 5000 && with_meta > 1000, "{entries} {with_meta}");
}

/// Every string field of `Meta` (but the identity's) and its key, as OTLP.md states it.
macro_rules! meta_table {
    ($($field:ident => $key:literal),* $(,)?) => {
        vec![$((stringify!($field), $key, (|m: &mut Meta| &mut m.$field) as fn(&mut Meta) -> &mut String)),*]
    };
}

#[test]
fn each_meta_field_goes_under_its_documented_key() {
    let table = meta_table![
        ip_address => "host.ip",
        os => "os.type",
        os_version => "os.version",
        kernel_version => "gosight.kernel_version",
        architecture => "host.arch",
        cloud_provider => "cloud.provider",
        region => "cloud.region",
        availability_zone => "cloud.availability_zone",
        instance_id => "cloud.instance.id",
        instance_type => "cloud.instance.type",
        account_id => "cloud.account.id",
        project_id => "cloud.project.id",
        resource_group => "gosight.resource_group",
        vpc_id => "gosight.vpc_id",
        subnet_id => "gosight.subnet_id",
        image_id => "host.image.id",
        service_id => "gosight.service_id",
        container_id => "container.id",
        container_name => "container.name",
        pod_name => "k8s.pod.name",
        namespace => "k8s.namespace.name",
        cluster_name => "k8s.cluster.name",
        node_name => "k8s.node.name",
        container_image_name => "container.image.name",
        container_image_id => "container.image.id",
        application => "gosight.application",
        environment => "deployment.environment.name",
        service => "service.name",
        version => "service.version",
        deployment_id => "gosight.deployment_id",
        public_ip => "gosight.public_ip",
        private_ip => "gosight.private_ip",
        mac_address => "host.mac",
        network_interface => "gosight.network_interface",
        platform => "gosight.platform",
        platform_family => "gosight.platform_family",
        platform_version => "gosight.platform_version",
        kernel_architecture => "gosight.kernel_architecture",
        virtualization_system => "gosight.virtualization_system",
        virtualization_role => "gosight.virtualization_role",
        agent_version => "gosight.agent_version",
        resource_id => "gosight.resource_id",
        kind => "gosight.kind",
        // The identity: GoSight's keys (each also set at the top level below).
        hostname => "host.name",
        host_id => "host.id",
        agent_id => "agent.id",
        endpoint_id => "endpoint.id",
    ];
    // The table covers every string field of the proto's Meta.
    let strings = logsender::wire::pb::meta::Meta::descriptor()
        .fields()
        .filter(|f| {
            matches!(
                f.runtime_field_type(),
                protobuf::reflect::RuntimeFieldType::Singular(
                    protobuf::reflect::RuntimeType::String
                )
            )
        })
        .count();
    assert_eq!(
        table.len(),
        strings,
        "a Meta field is missing from the table"
    );

    for (field, key, set) in &table {
        let mut meta = Meta::default();
        let value = format!("value of {field}");
        *set(&mut meta) = value.clone();
        let mut payload = LogPayload {
            meta: Some(meta),
            ..Default::default()
        };
        // The identity is repeated at the top level, as the model asks.
        if let Some(m) = payload.meta.clone() {
            payload.hostname = m.hostname;
            payload.host_id = m.host_id;
            payload.agent_id = m.agent_id;
            payload.endpoint_id = m.endpoint_id;
        }
        let req = otlp::to_request(&payload);
        let attrs = resource_attrs(&req);
        // The agent and endpoint IDs go under a second key too (gosight-server 65922fc
        // reads those).
        let keys: Vec<&str> = match *key {
            "agent.id" => vec!["agent.id", "service.instance.id"],
            "endpoint.id" => vec!["endpoint.id", "gosight.endpoint.id"],
            key => vec![key],
        };
        assert_eq!(
            attrs.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
            keys,
            "{field}: {attrs:?}"
        );
        assert!(
            attrs.iter().all(|a| a.value.value == string(&value)),
            "{field}"
        );
        let back = otlp::from_request(req);
        assert_eq!(back[0], payload, "{field} round trip");
    }

    // Maps: labels under their own key (escaped when the key is taken), tags under tag.
    let mut meta = Meta::default();
    meta.labels.insert("team".into(), "core".into());
    meta.labels
        .insert("host.name".into(), "not the host".into());
    meta.labels.insert("tag.x".into(), "a label".into());
    meta.labels.insert(String::new(), "empty key".into());
    meta.tags.insert("env".into(), "prod".into());
    let payload = LogPayload {
        meta: Some(meta),
        ..Default::default()
    };
    let req = otlp::to_request(&payload);
    let attrs = resource_attrs(&req);
    assert_eq!(get(attrs, "team"), string("core").as_ref());
    assert_eq!(
        get(attrs, "gosight.label.host.name"),
        string("not the host").as_ref()
    );
    assert_eq!(
        get(attrs, "gosight.label.tag.x"),
        string("a label").as_ref()
    );
    assert_eq!(get(attrs, "gosight.label."), string("empty key").as_ref());
    assert_eq!(get(attrs, "tag.env"), string("prod").as_ref());
    assert_eq!(get(attrs, "host.name"), None);
    assert_eq!(otlp::from_request(req), vec![payload]);
}

#[test]
fn identity_goes_where_gosight_reads_it_and_copies_that_differ_survive() {
    // internal/telemetry/convert.go (gosight-server), convertOTLPResourceToMeta: the
    // payload's AgentID, HostID, Hostname and EndpointID come from these four keys.
    let payload = LogPayload::from_host("agent-7");
    let req = otlp::to_request(&payload);
    let attrs = resource_attrs(&req);
    let meta = payload.meta.as_ref().unwrap();
    assert_eq!(get(attrs, "agent.id"), string("agent-7").as_ref());
    assert_eq!(get(attrs, "host.id"), string(&payload.host_id).as_ref());
    assert_eq!(get(attrs, "host.name"), string(&payload.hostname).as_ref());
    assert_eq!(
        get(attrs, "endpoint.id"),
        string(&meta.endpoint_id).as_ref()
    );
    assert!(
        attrs
            .iter()
            .all(|a| !a.key.starts_with("gosight.payload.") && !a.key.starts_with("gosight.meta.")),
        "no copies when the top level repeats meta: {attrs:?}"
    );
    assert_eq!(otlp::from_request(req), vec![payload]);

    // Copies that differ, a top level left empty, no meta at all.
    let mut odd = LogPayload {
        agent_id: "top-agent".into(),
        hostname: String::new(),
        host_id: "h".into(),
        meta: Some(Meta {
            agent_id: "meta-agent".into(),
            hostname: "meta-host".into(),
            host_id: "h".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let req = otlp::to_request(&odd);
    let attrs = resource_attrs(&req);
    assert_eq!(get(attrs, "agent.id"), string("top-agent").as_ref());
    assert_eq!(
        get(attrs, "gosight.meta.agent_id"),
        string("meta-agent").as_ref()
    );
    assert_eq!(
        get(attrs, "host.name"),
        string("meta-host").as_ref(),
        "meta's when the top level is empty"
    );
    assert_eq!(get(attrs, "gosight.payload.hostname"), string("").as_ref());
    assert_eq!(otlp::from_request(req), vec![odd.clone()]);
    odd.meta = None;
    let req = otlp::to_request(&odd);
    assert_eq!(
        get(resource_attrs(&req), "gosight.meta.present"),
        Some(&Value::BoolValue(false))
    );
    assert_eq!(otlp::from_request(req), vec![odd]);
}

/// Every string field of `LogMeta` and its record key, as OTLP.md states it.
macro_rules! log_meta_table {
    ($($field:ident => $key:literal),* $(,)?) => {
        vec![$((stringify!($field), $key, (|m: &mut LogMeta| &mut m.$field) as fn(&mut LogMeta) -> &mut String)),*]
    };
}

#[test]
fn entries_go_under_their_documented_keys() {
    let table = log_meta_table![
        platform => "gosight.platform",
        app_name => "app.name",
        app_version => "app.version",
        container_id => "container.id",
        container_name => "container.name",
        unit => "gosight.unit",
        service => "service.name",
        event_id => "gosight.event_id",
        user => "process.owner",
        executable => "process.executable",
        path => "log.file.path",
    ];
    let strings = logsender::wire::pb::log::LogMeta::descriptor()
        .fields()
        .count()
        - 1; // but extra
    assert_eq!(
        table.len(),
        strings,
        "a LogMeta field is missing from the table"
    );
    let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
    let batch = UNIX_EPOCH + Duration::new(1_700_000_001, 0);
    for (field, key, set) in &table {
        let mut meta = LogMeta::default();
        *set(&mut meta) = format!("value of {field}");
        let payload = LogPayload {
            timestamp: Some(batch),
            logs: vec![LogEntry::new(Level::Info, "m")
                .with_timestamp(at)
                .with_meta(meta)],
            ..Default::default()
        };
        let req = otlp::to_request(&payload);
        let r = &records(&req)[0];
        assert_eq!(r.attributes.len(), 1, "{field}: {:?}", r.attributes);
        assert_eq!(r.attributes[0].key, *key, "{field}");
        assert_eq!(otlp::from_request(req), vec![payload], "{field} round trip");
    }

    let mut meta = LogMeta::default();
    meta.extra.insert("k".into(), "v".into());
    let entry = LogEntry::new(Level::Error, "boom 💥")
        .with_timestamp(at)
        .with_source("journald")
        .with_category("auth")
        .with_pid(4242)
        .with_field("mount", "/var")
        .with_field("source", "a field, not the source")
        .with_field("field.x", "already prefixed")
        .with_tag("team", "storage")
        .with_meta(meta);
    let payload = LogPayload {
        timestamp: Some(batch),
        logs: vec![entry, LogEntry::default().with_meta(LogMeta::default())],
        ..Default::default()
    };
    let req = otlp::to_request(&payload);
    let r = &records(&req)[0];
    assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_123);
    assert_eq!(r.observed_time_unix_nano, 1_700_000_001_000_000_000);
    assert_eq!(r.severity_text, "error");
    assert_eq!(
        r.severity_number.enum_value(),
        Ok(SeverityNumber::SEVERITY_NUMBER_ERROR)
    );
    assert_eq!(r.body.value, string("boom 💥"));
    let a = &r.attributes;
    assert_eq!(get(a, "log.source"), string("journald").as_ref());
    assert_eq!(get(a, "log.category"), string("auth").as_ref());
    assert_eq!(get(a, "process.pid"), Some(&Value::IntValue(4242)));
    assert_eq!(get(a, "mount"), string("/var").as_ref());
    assert_eq!(
        get(a, "field.source"),
        string("a field, not the source").as_ref()
    );
    assert_eq!(get(a, "field.field.x"), string("already prefixed").as_ref());
    assert_eq!(get(a, "tag.team"), string("storage").as_ref());
    assert_eq!(get(a, "gosight.extra.k"), string("v").as_ref());
    // An empty entry: no time, empty body, the marker for its empty meta.
    let r = &records(&req)[1];
    assert_eq!(r.time_unix_nano, 0);
    assert_eq!(r.body.value, string(""));
    assert_eq!(r.attributes.len(), 1);
    assert_eq!(
        get(&r.attributes, "gosight.log_meta.present"),
        Some(&Value::BoolValue(true))
    );
    assert_eq!(otlp::from_request(req), vec![payload]);
}

/// GoSight's `convertSeverityToLevel` (internal/telemetry/convert.go): the level its
/// receiver names from the number alone.
fn gosight_level(number: i32) -> &'static str {
    match number {
        21.. => "critical",
        17.. => "error",
        13.. => "warning",
        9.. => "info",
        _ => "debug",
    }
}

#[test]
fn levels_map_to_severity_numbers_and_gosight_reads_them_back() {
    let table = [
        (Level::Debug, SeverityNumber::SEVERITY_NUMBER_DEBUG, "debug"),
        (Level::Info, SeverityNumber::SEVERITY_NUMBER_INFO, "info"),
        (Level::Notice, SeverityNumber::SEVERITY_NUMBER_INFO2, "info"),
        (
            Level::Warning,
            SeverityNumber::SEVERITY_NUMBER_WARN,
            "warning",
        ),
        (Level::Error, SeverityNumber::SEVERITY_NUMBER_ERROR, "error"),
        (
            Level::Critical,
            SeverityNumber::SEVERITY_NUMBER_FATAL,
            "critical",
        ),
        (
            Level::Alert,
            SeverityNumber::SEVERITY_NUMBER_FATAL2,
            "critical",
        ),
        (
            Level::Emergency,
            SeverityNumber::SEVERITY_NUMBER_FATAL3,
            "critical",
        ),
    ];
    for (level, number, at_gosight) in table {
        assert_eq!(otlp::severity_number(level.as_str()), number, "{level}");
        assert_eq!(otlp::level_of(number as i32), Some(level), "{level}");
        assert_eq!(gosight_level(number as i32), at_gosight, "{level}");
        let payload = LogPayload {
            logs: vec![LogEntry::new(level, "x")],
            ..Default::default()
        };
        let req = otlp::to_request(&payload);
        let r = &records(&req)[0];
        assert_eq!(
            (r.severity_text.as_str(), r.severity_number.value()),
            (level.as_str(), number as i32)
        );
    }
    // The usual spellings, as `Level` parses them; `trace` has its own number.
    assert_eq!(
        otlp::severity_number("trace"),
        SeverityNumber::SEVERITY_NUMBER_TRACE
    );
    assert_eq!(
        otlp::severity_number("WARN"),
        SeverityNumber::SEVERITY_NUMBER_WARN
    );
    assert_eq!(
        otlp::severity_number("fatal"),
        SeverityNumber::SEVERITY_NUMBER_FATAL
    );
    assert_eq!(
        otlp::severity_number("verbose"),
        SeverityNumber::SEVERITY_NUMBER_UNSPECIFIED
    );
    assert_eq!(
        otlp::severity_number(""),
        SeverityNumber::SEVERITY_NUMBER_UNSPECIFIED
    );
    // Ranges back to levels; a record without text gets its number's level.
    let ranges: Vec<Option<Level>> = (0..=25).map(otlp::level_of).collect();
    assert_eq!(ranges[0], None);
    assert!(ranges[1..=8].iter().all(|l| *l == Some(Level::Debug)));
    assert_eq!(ranges[9], Some(Level::Info));
    assert!(ranges[10..=12].iter().all(|l| *l == Some(Level::Notice)));
    assert!(ranges[13..=16].iter().all(|l| *l == Some(Level::Warning)));
    assert!(ranges[17..=20].iter().all(|l| *l == Some(Level::Error)));
    assert_eq!(ranges[21], Some(Level::Critical));
    assert_eq!(ranges[22], Some(Level::Alert));
    assert_eq!(
        &ranges[23..=25],
        &[Some(Level::Emergency), Some(Level::Emergency), None]
    );
}

#[test]
fn a_request_from_another_client_reads_too() {
    let mut req = otlp::to_request(&LogPayload {
        logs: vec![LogEntry::default()],
        ..Default::default()
    });
    let rl = &mut req.resource_logs[0];
    let kv = |k: &str, v: Value| KeyValue {
        key: k.into(),
        value: protobuf::MessageField::some(AnyValue {
            value: Some(v),
            ..Default::default()
        }),
        ..Default::default()
    };
    rl.resource.mut_or_insert_default().attributes = vec![
        kv(
            "telemetry.sdk.name",
            Value::StringValue("opentelemetry".into()),
        ),
        kv("host.name", Value::StringValue("h1".into())),
        kv("process.runtime.pid", Value::IntValue(7)),
    ];
    let r = &mut rl.scope_logs[0].log_records[0];
    r.severity_number = SeverityNumber::SEVERITY_NUMBER_WARN2.into();
    r.body = protobuf::MessageField::some(AnyValue {
        value: Some(Value::IntValue(42)),
        ..Default::default()
    });
    r.attributes = vec![
        kv("http.method", Value::StringValue("GET".into())),
        kv("process.pid", Value::StringValue("99".into())),
        kv("retry", Value::BoolValue(true)),
    ];
    let back = otlp::from_request(req);
    let p = &back[0];
    let meta = p.meta.as_ref().expect("a resource reads as a meta");
    assert_eq!((p.hostname.as_str(), meta.hostname.as_str()), ("h1", "h1"));
    assert_eq!(meta.labels["telemetry.sdk.name"], "opentelemetry");
    assert_eq!(meta.labels["process.runtime.pid"], "7");
    let e = &p.logs[0];
    assert_eq!(
        (e.level.as_str(), e.message.as_str(), e.pid),
        ("warning", "42", 99)
    );
    assert_eq!(e.fields["http.method"], "GET");
    assert_eq!(e.fields["retry"], "true");
    assert_eq!(e.meta, None);
}

fn check_chunks(payload: &LogPayload, cap: usize, chunks: &[Chunk]) {
    let mut next = 0;
    let mut logs = Vec::new();
    for c in chunks {
        assert_eq!(c.entries.start, next, "contiguous, in order");
        assert!(!c.entries.is_empty());
        next = c.entries.end;
        let bytes = otlp::encode(&c.request).unwrap();
        assert_eq!(bytes.len(), c.encoded_len, "encoded_len is exact");
        assert!(
            c.encoded_len <= cap || c.entries.len() == 1,
            "over the cap: {} > {cap}",
            c.encoded_len
        );
        let back = otlp::decode(&bytes).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].meta, payload.meta);
        logs.extend(back.into_iter().flat_map(|p| p.logs));
    }
    assert_eq!(next, payload.logs.len());
    assert_eq!(logs, expected_back(payload).logs);
}

#[test]
fn split_keeps_every_request_under_the_cap() {
    let mut rng = Rng(0x5b11_7000);
    let mut payload = LogPayload::from_host("agent-split");
    payload.timestamp = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    for i in 0..3000 {
        let len = match rng.below(10) {
            0 => rng.below(20_000),
            _ => rng.below(400),
        } as usize;
        payload.logs.push(
            LogEntry::new(Level::Info, "x".repeat(len))
                .with_field("i", i.to_string())
                .with_tag("t", "u"),
        );
    }
    for cap in [1, 600, 4096, 65_536, 1 << 20] {
        let chunks = otlp::split(&payload, cap);
        check_chunks(&payload, cap, &chunks);
        if cap >= 65_536 {
            // Greedy: no two neighbours would have fit together.
            for w in chunks.windows(2) {
                assert!(w[0].encoded_len + w[1].encoded_len > cap, "{cap}");
            }
        }
    }
    // At OTLP's usual limit: a payload of about 10 MiB becomes three or four requests.
    let mut big = LogPayload::from_host("agent-big");
    big.logs = (0..10_000)
        .map(|i| LogEntry::new(Level::Info, format!("{i:>1000}")))
        .collect();
    let chunks = otlp::split(&big, otlp::MAX_REQUEST_BYTES);
    check_chunks(&big, otlp::MAX_REQUEST_BYTES, &chunks);
    assert!((3..=4).contains(&chunks.len()), "{}", chunks.len());
    // An entry over the cap alone travels alone, its chunk saying so.
    let mut one = LogPayload::from_host("agent-one");
    one.logs = vec![
        LogEntry::new(Level::Info, "small"),
        LogEntry::new(Level::Info, "y".repeat(10_000)),
        LogEntry::new(Level::Info, "small"),
    ];
    let chunks = otlp::split(&one, 2_000);
    check_chunks(&one, 2_000, &chunks);
    assert_eq!(
        chunks.iter().map(|c| c.entries.clone()).collect::<Vec<_>>(),
        vec![0..1, 1..2, 2..3]
    );
    assert!(chunks[1].encoded_len > 10_000);
    assert!(otlp::split(&LogPayload::from_host("a"), 1).is_empty());
}

// ---------------------------------------------------------------------------------------
// Interop: PyPI's opentelemetry-proto decodes what we encode.

/// JSON text of a string.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_attrs(attrs: &[(&str, String)]) -> String {
    let items: Vec<String> = attrs
        .iter()
        .map(|(k, v)| format!("{}: {v}", json_str(k)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn s(v: &str) -> String {
    format!("[\"s\", {}]", json_str(v))
}

/// Whether PyPI's `opentelemetry-proto` is importable from `python3`.
fn python_has_otlp() -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.proto.collector.logs.v1.logs_service_pb2",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn write_case(dir: &Path, name: &str, payload: &LogPayload, expected: String) {
    let bytes = otlp::encode(&otlp::to_request(payload)).unwrap();
    std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    std::fs::write(dir.join(format!("{name}.json")), expected).unwrap();
}

#[test]
fn pypi_opentelemetry_proto_decodes_what_we_encode() {
    if !python_has_otlp() {
        let required = std::env::var_os("LOGSENDER_OTLP_INTEROP").is_some_and(|v| v == "require");
        let msg =
            "python3 cannot import opentelemetry.proto (pip install opentelemetry-proto==1.45.2)";
        assert!(!required, "LOGSENDER_OTLP_INTEROP=require, but {msg}");
        eprintln!("SKIPPED pypi_opentelemetry_proto_decodes_what_we_encode: {msg}");
        return;
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("logsender-otlp-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // One payload spelled out: every value checked by the Python side, key by key.
    let at = UNIX_EPOCH + Duration::new(1_700_000_000, 987_654_321);
    let batch = UNIX_EPOCH + Duration::new(1_700_000_005, 0);
    let meta = Meta {
        hostname: "web-01".into(),
        host_id: "0f3c".into(),
        agent_id: "agent-1".into(),
        endpoint_id: "host-0f3c".into(),
        os: "linux".into(),
        architecture: "x86_64".into(),
        region: "eu-west-1".into(),
        pod_name: "api-7d9".into(),
        service: "api".into(),
        environment: "prod".into(),
        kernel_version: "6.1.0".into(),
        labels: HashMap::from([("team".to_string(), "core".to_string())]),
        tags: HashMap::from([("rack".to_string(), "r1".to_string())]),
        ..Default::default()
    };
    let payload = LogPayload {
        agent_id: "agent-1".into(),
        host_id: "0f3c".into(),
        hostname: "web-01".into(),
        endpoint_id: "host-0f3c".into(),
        timestamp: Some(batch),
        meta: Some(meta),
        logs: vec![
            LogEntry::new(Level::Critical, "disk \"sda\" failed\n日本 🦀")
                .with_timestamp(at)
                .with_source("kernel")
                .with_pid(1)
                .with_field("device", "sda")
                .with_tag("sev", "page")
                .with_meta(LogMeta {
                    container_id: "c0ffee".into(),
                    user: "root".into(),
                    ..Default::default()
                }),
            LogEntry {
                level: "verbose".into(),
                ..Default::default()
            },
        ],
    };
    let resource = json_attrs(&[
        ("host.name", s("web-01")),
        ("host.id", s("0f3c")),
        ("agent.id", s("agent-1")),
        ("service.instance.id", s("agent-1")),
        ("endpoint.id", s("host-0f3c")),
        ("gosight.endpoint.id", s("host-0f3c")),
        ("os.type", s("linux")),
        ("gosight.kernel_version", s("6.1.0")),
        ("host.arch", s("x86_64")),
        ("cloud.region", s("eu-west-1")),
        ("k8s.pod.name", s("api-7d9")),
        ("deployment.environment.name", s("prod")),
        ("service.name", s("api")),
        ("team", s("core")),
        ("tag.rack", s("r1")),
    ]);
    let first = format!(
        "{{\"time\": 1700000000987654321, \"observed\": 1700000005000000000, \"severity_number\": 21, \
         \"severity_text\": \"critical\", \"body\": {}, \"attributes\": {}}}",
        json_str("disk \"sda\" failed\n日本 🦀"),
        json_attrs(&[
            ("log.source", s("kernel")),
            ("process.pid", "[\"i\", 1]".into()),
            ("container.id", s("c0ffee")),
            ("process.owner", s("root")),
            ("device", s("sda")),
            ("tag.sev", s("page")),
        ])
    );
    let second = "{\"time\": 0, \"observed\": 1700000005000000000, \"severity_number\": 0, \
                  \"severity_text\": \"verbose\", \"body\": \"\", \"attributes\": {}}";
    write_case(
        &dir,
        "a-spelled-out",
        &payload,
        format!("{{\"records\": 2, \"resource\": {resource}, \"entries\": [{first}, {second}]}}"),
    );

    // Random payloads: they parse, carry nothing the classes do not know, and
    // serialize back to the same bytes.
    let mut rng = Rng(0x01e7_e20b);
    for i in 0..300 {
        let model = LogPayload::try_from(random_payload(&mut rng, false)).unwrap();
        if model.logs.is_empty() {
            continue;
        }
        let n = model.logs.len();
        write_case(
            &dir,
            &format!("r{i:04}"),
            &model,
            format!("{{\"records\": {n}}}"),
        );
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/otlp_interop.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("python3 runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "the Python decoder disagrees:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}
