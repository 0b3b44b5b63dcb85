//! The model in OTLP's terms: a [`LogPayload`] as an OpenTelemetry
//! `ExportLogsServiceRequest` (`opentelemetry.proto.collector.logs.v1`), and back.
//!
//! The mapping of the OTLP wire ([`Wire::OtlpLogs`](crate::Wire::OtlpLogs)), public so
//! that it can be checked, and used by a program that ships OTLP itself.
//!
//! One payload is one `ResourceLogs` with one `ScopeLogs` (scope `logsender`, the
//! crate's version): the payload's identity and its [`Meta`] become the resource's
//! attributes, each [`LogEntry`] a `LogRecord`. `OTLP.md` at the repository's root has
//! the whole table, key by key, and what GoSight's OTLP receiver reads. In short:
//!
//! - identity: `host.name`, `host.id`, `agent.id`, `endpoint.id` (the keys GoSight's
//!   receiver files logs under; the agent and endpoint IDs also under
//!   `service.instance.id` and `gosight.endpoint.id`, which an older receiver reads),
//!   from the top-level fields (or `meta`'s where those are empty);
//! - `Meta`: semantic-convention keys where OpenTelemetry has one (`host.arch`,
//!   `os.type`, `cloud.region`, `k8s.pod.name`, `service.name`, ...), GoSight's where
//!   its receiver reads one (`host.ip`, `cloud.instance.id`, ...), `gosight.<field>`
//!   otherwise; labels under their own key, tags under `tag.<name>`;
//! - entry: `time_unix_nano` (the entry's timestamp), `observed_time_unix_nano` (the
//!   payload's), `severity_text` (the level as written), `severity_number` (from
//!   [`Level`]: [`severity_number`]), body (the message, a string); attributes
//!   `log.source`, `log.category`, `process.pid`, the [`LogMeta`] keys, fields under
//!   their own name, tags under `tag.<name>`.
//!
//! [`from_request`] reads a request back; model → OTLP → model is the identity on every
//! field, except timestamps OTLP cannot hold (before 1970, or the epoch itself, come
//! back as `None`; after 2554 they saturate) and the timestamp of a payload with no
//! entries (it rides on the records). A request from another OTLP client reads as
//! well: unknown resource attributes become `meta.labels`, unknown record attributes
//! `fields`, non-string values their text.
//!
//! [`encode_payload`] writes the bytes of `encode(&to_request(p))` straight from the
//! payload, without the message tree (3–4× less CPU), cut under a cap where [`split`]
//! cuts; [`parts`] finds the cut's requests again. [`entry_record`] and [`Frame`] are
//! the entry level's pieces (entries encoded one by one, joined into the same bytes).
//!
//! ```
//! use logsender::otlp;
//! use logsender::{Level, LogEntry, LogPayload};
//!
//! let mut payload = LogPayload::from_host("agent-1");
//! payload.logs.push(LogEntry::new(Level::Warning, "disk 91% full").with_field("mount", "/var"));
//! let request = otlp::to_request(&payload);
//! let bytes = otlp::encode(&request)?; // an `ExportLogsServiceRequest` on the wire
//! assert_eq!(otlp::decode(&bytes)?, vec![payload]);
//! # Ok::<(), logsender::Error>(())
//! ```

use std::collections::HashMap;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protobuf::{Message, MessageField};

use crate::error::Error;
use crate::model::{Level, LogEntry, LogMeta, LogPayload, Meta};

/// Generated rust-protobuf types for the OTLP logs protos (`proto/opentelemetry/`,
/// opentelemetry-proto v1.11.0).
///
/// [`pb::logs_service`] has the request and response of `LogsService/Export`,
/// [`pb::logs`] `ResourceLogs`, `ScopeLogs`, `LogRecord` and `SeverityNumber`,
/// [`pb::common`] `AnyValue` and `KeyValue`, [`pb::resource`] `Resource`.
pub mod pb {
    // The generated items carry no doc comments; the crate denies missing docs.
    #![allow(missing_docs)]
    #![allow(
        unused_qualifications,
        unreachable_pub,
        clippy::pedantic,
        clippy::nursery
    )]

    include!(concat!(env!("OUT_DIR"), "/otlp/mod.rs"));
}

mod encode;
mod frame;

pub use encode::{encode_payload, encode_resource_logs, parts};
pub use frame::{entry_record, Frame};
pub(crate) use frame::{entry_record_within, RecordWriter};

use pb::common::{any_value, AnyValue, InstrumentationScope, KeyValue};
use pb::logs::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use pb::logs_service::ExportLogsServiceRequest;
use pb::resource::Resource;

/// The gRPC method of OTLP's logs service.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The largest request OTLP collectors take by default (grpc-go's, grpc-js's and the
/// C core's receive limit), before compression: what [`split`] is meant to be given.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The instrumentation scope's name on every `ScopeLogs` (its version is the crate's).
pub const SCOPE_NAME: &str = "logsender";

/// Prefix of a tag's attribute key, on the resource (`Meta::tags`) and on a record
/// (`LogEntry::tags`). GoSight's receiver files `tag.*` attributes as labels.
pub const TAG_PREFIX: &str = "tag.";

/// Prefix of a field whose own name is taken (a key of this mapping, a key GoSight's
/// receiver reads, or empty): `field.<name>`.
pub const FIELD_ESCAPE: &str = "field.";

/// Prefix of a `Meta` label whose own name is taken: `gosight.label.<name>`.
pub const LABEL_ESCAPE: &str = "gosight.label.";

/// Prefix of a `LogMeta::extra` entry's key: `gosight.extra.<name>`.
pub const EXTRA_PREFIX: &str = "gosight.extra.";

/// Prefix of every key this mapping makes up for what OpenTelemetry has no key for.
const GOSIGHT: &str = "gosight.";

/// Resource marker: `false` when the payload had no `meta` (a payload without the
/// marker reads with a `meta`).
const META_PRESENT: &str = "gosight.meta.present";

/// Record marker: `true` when the entry's `meta` was present but empty (an entry
/// without a `LogMeta` attribute nor the marker reads without one).
const LOG_META_PRESENT: &str = "gosight.log_meta.present";

const SOURCE: &str = "log.source";
const CATEGORY: &str = "log.category";
const PID: &str = "process.pid";

/// Generates, from one list of `field => key`, the walk over the fields in list order
/// (`key`, value), the decoding (`key` → the field) and the list of keys.
macro_rules! string_keys {
    ($ty:ty, $each:ident, $field_of:ident, $keys:ident, [$($field:ident => $key:literal),* $(,)?]) => {
        fn $each<'a>(m: &'a $ty, mut f: impl FnMut(&'static str, &'a str)) {
            $( f($key, &m.$field); )*
        }

        fn $field_of<'a>(m: &'a mut $ty, key: &str) -> Option<&'a mut String> {
            match key {
                $( $key => Some(&mut m.$field), )*
                _ => None,
            }
        }

        const $keys: &[&str] = &[$($key),*];
    };
}

// `Meta`'s fields on the resource, but for its identity (below) and its two maps.
string_keys!(Meta, each_meta, meta_field, META_KEYS, [
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
]);

// `LogMeta`'s fields on a record, but for `extra`.
string_keys!(LogMeta, each_log_meta, log_meta_field, LOG_META_KEYS, [
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
]);

/// A payload's identity, in the order of [`identity`]: the key GoSight's receiver reads
/// (gosight-server 58e7928), the keys of the top-level and of `meta`'s copy when it
/// differs from the value under that key, and a second key with the same value where
/// GoSight's receivers disagree (gosight-server 65922fc reads the agent ID from
/// `service.instance.id` only, the endpoint ID from `gosight.endpoint.id`).
const IDENTITY: [(&str, &str, &str, Option<&str>); 4] = [
    (
        "host.name",
        "gosight.payload.hostname",
        "gosight.meta.hostname",
        None,
    ),
    (
        "host.id",
        "gosight.payload.host_id",
        "gosight.meta.host_id",
        None,
    ),
    (
        "agent.id",
        "gosight.payload.agent_id",
        "gosight.meta.agent_id",
        Some("service.instance.id"),
    ),
    (
        "endpoint.id",
        "gosight.payload.endpoint_id",
        "gosight.meta.endpoint_id",
        Some("gosight.endpoint.id"),
    ),
];

fn identity(p: &LogPayload) -> [&str; 4] {
    [&p.hostname, &p.host_id, &p.agent_id, &p.endpoint_id]
}

fn meta_identity(m: &Meta) -> [&str; 4] {
    [&m.hostname, &m.host_id, &m.agent_id, &m.endpoint_id]
}

fn payload_identity(p: &mut LogPayload) -> [&mut String; 4] {
    [
        &mut p.hostname,
        &mut p.host_id,
        &mut p.agent_id,
        &mut p.endpoint_id,
    ]
}

fn meta_identity_mut(m: &mut Meta) -> [&mut String; 4] {
    [
        &mut m.hostname,
        &mut m.host_id,
        &mut m.agent_id,
        &mut m.endpoint_id,
    ]
}

/// Record keys GoSight's receiver gives a meaning to (`internal/telemetry/convert.go`,
/// `convertOTLPToModelLogPayloads`): a field under one of them would not stay a field
/// there, so it is escaped.
const GOSIGHT_RECORD_KEYS: &[&str] = &[
    "source",
    "category",
    "pid",
    "service.version",
    "container.image.id",
    "container.image.name",
    "k8s.pod.name",
    "k8s.namespace.name",
    "k8s.cluster.name",
    "k8s.node.name",
    "thread.id",
    "thread_id",
    "logger.name",
    "path",
    "user",
    "executable",
    "environment",
    "deployment",
    "region",
    "zone",
];

/// Whether a `Meta` label cannot go under its own key.
fn label_taken(key: &str) -> bool {
    key.is_empty()
        || key.starts_with(GOSIGHT)
        || key.starts_with(TAG_PREFIX)
        || META_KEYS.contains(&key)
        || IDENTITY.iter().any(|i| i.0 == key || i.3 == Some(key))
}

/// Whether a field cannot go under its own key.
fn field_taken(key: &str) -> bool {
    key.is_empty()
        || key.starts_with(GOSIGHT)
        || key.starts_with(TAG_PREFIX)
        || key.starts_with(FIELD_ESCAPE)
        || matches!(key, SOURCE | CATEGORY | PID)
        || LOG_META_KEYS.contains(&key)
        || GOSIGHT_RECORD_KEYS.contains(&key)
}

// ---------------------------------------------------------------------------------------
// Model → OTLP

/// The OTLP request for `payload`: one `ResourceLogs`, one `ScopeLogs`, one `LogRecord`
/// per entry, in order. Copies every string (a message tree is built, then encoded by
/// [`encode`]).
pub fn to_request(payload: &LogPayload) -> ExportLogsServiceRequest {
    let records = payload
        .logs
        .iter()
        .map(|e| record(e, payload.timestamp))
        .collect();
    request(resource(payload), records)
}

/// The `SeverityNumber` of a level string: the start of the range of its [`Level`]
/// (`trace` is `TRACE`), `UNSPECIFIED` for a string that names no level.
///
/// | level | number |
/// |---|---|
/// | `trace` | `TRACE` (1) |
/// | `debug` | `DEBUG` (5) |
/// | `info` | `INFO` (9) |
/// | `notice` | `INFO2` (10) |
/// | `warning` | `WARN` (13) |
/// | `error` | `ERROR` (17) |
/// | `critical` | `FATAL` (21) |
/// | `alert` | `FATAL2` (22) |
/// | `emergency` | `FATAL3` (23) |
///
/// Critical, alert and emergency are in OTLP's `FATAL` range (not `ERROR2`/`ERROR3` as
/// the OpenTelemetry data model's syslog table has it) because GoSight's receiver
/// names a level from the number alone, and only `FATAL` and above come back as its
/// `critical`.
pub fn severity_number(level: &str) -> SeverityNumber {
    if level.trim().eq_ignore_ascii_case("trace") {
        return SeverityNumber::SEVERITY_NUMBER_TRACE;
    }
    match level.parse::<Level>() {
        Ok(Level::Debug) => SeverityNumber::SEVERITY_NUMBER_DEBUG,
        Ok(Level::Info) => SeverityNumber::SEVERITY_NUMBER_INFO,
        Ok(Level::Notice) => SeverityNumber::SEVERITY_NUMBER_INFO2,
        Ok(Level::Warning) => SeverityNumber::SEVERITY_NUMBER_WARN,
        Ok(Level::Error) => SeverityNumber::SEVERITY_NUMBER_ERROR,
        Ok(Level::Critical) => SeverityNumber::SEVERITY_NUMBER_FATAL,
        Ok(Level::Alert) => SeverityNumber::SEVERITY_NUMBER_FATAL2,
        Ok(Level::Emergency) => SeverityNumber::SEVERITY_NUMBER_FATAL3,
        Err(_) => SeverityNumber::SEVERITY_NUMBER_UNSPECIFIED,
    }
}

/// The [`Level`] of a `SeverityNumber` (what a record without `severity_text` reads
/// as): `TRACE`..`DEBUG4` debug, `INFO` info, `INFO2`..`INFO4` notice, `WARN`.. warning,
/// `ERROR`.. error, `FATAL` critical, `FATAL2` alert, `FATAL3` and `FATAL4` emergency;
/// `None` for `UNSPECIFIED` and numbers outside 1..=24.
pub fn level_of(number: i32) -> Option<Level> {
    Some(match number {
        1..=8 => Level::Debug,
        9 => Level::Info,
        10..=12 => Level::Notice,
        13..=16 => Level::Warning,
        17..=20 => Level::Error,
        21 => Level::Critical,
        22 => Level::Alert,
        23 | 24 => Level::Emergency,
        _ => return None,
    })
}

fn request(resource: Resource, log_records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: MessageField::some(resource),
            scope_logs: vec![ScopeLogs {
                scope: MessageField::some(scope()),
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

fn resource(p: &LogPayload) -> Resource {
    let mut build = Build::default();
    resource_attributes(p, &mut build);
    Resource {
        attributes: build.attrs,
        ..Default::default()
    }
}

fn record(e: &LogEntry, observed: Option<SystemTime>) -> LogRecord {
    let mut build = Build {
        attrs: Vec::with_capacity(3 + e.fields.len() + e.tags.len()),
        ..Default::default()
    };
    record_attributes(e, &mut build);
    LogRecord {
        time_unix_nano: unix_nanos(e.timestamp),
        observed_time_unix_nano: unix_nanos(observed),
        severity_number: severity_number(&e.level).into(),
        severity_text: e.level.clone(),
        body: MessageField::some(AnyValue {
            value: Some(any_value::Value::StringValue(e.message.clone())),
            ..Default::default()
        }),
        attributes: build.attrs,
        ..Default::default()
    }
}

/// An attribute's value, as the mapping makes it.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

/// What the mapping hands a level's attributes to, in their order: the message builder
/// ([`to_request`]) or the hand encoder ([`encode_payload`]). One walk per level
/// ([`resource_attributes`], [`record_attributes`]) serves both, so the two encoders
/// cannot disagree on what the attributes are.
trait Attributes<'a> {
    /// An attribute whose key is `prefix` followed by `name`.
    fn attr(&mut self, prefix: &'static str, name: &'a str, value: Value<'a>);

    /// A buffer to sort a map's entries in, kept from map to map.
    fn scratch(&mut self) -> &mut Vec<(&'a String, &'a String)>;
}

/// The message builder's attributes: `KeyValue`s, their strings copied.
#[derive(Default)]
struct Build<'a> {
    attrs: Vec<KeyValue>,
    scratch: Vec<(&'a String, &'a String)>,
}

impl<'a> Attributes<'a> for Build<'a> {
    fn attr(&mut self, prefix: &'static str, name: &'a str, value: Value<'a>) {
        let value = match value {
            Value::Str(s) => any_value::Value::StringValue(s.to_owned()),
            Value::Int(n) => any_value::Value::IntValue(n),
            Value::Bool(b) => any_value::Value::BoolValue(b),
        };
        self.attrs.push(KeyValue {
            key: [prefix, name].concat(),
            value: MessageField::some(AnyValue {
                value: Some(value),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    fn scratch(&mut self) -> &mut Vec<(&'a String, &'a String)> {
        &mut self.scratch
    }
}

/// A string attribute, left out when the string is empty.
fn put_string<'a>(a: &mut impl Attributes<'a>, key: &'static str, value: &'a str) {
    if !value.is_empty() {
        a.attr("", key, Value::Str(value));
    }
}

/// Calls `f` on each entry of `map`, by key, so that a request's bytes do not depend on
/// a `HashMap`'s order.
fn entries<'a, A: Attributes<'a>>(
    a: &mut A,
    map: &'a HashMap<String, String>,
    mut f: impl FnMut(&mut A, &'a str, &'a str),
) {
    if map.len() < 2 {
        for (k, v) in map {
            f(a, k, v);
        }
        return;
    }
    let mut sorted = std::mem::take(a.scratch());
    sorted.clear();
    sorted.extend(map.iter());
    sorted.sort_unstable_by(|x, y| x.0.cmp(y.0));
    for &(k, v) in &sorted {
        f(a, k, v);
    }
    *a.scratch() = sorted;
}

/// The resource's attributes: the identity, then `meta` (or the marker of its absence),
/// then the identity's copies where they differ from the value under its key.
fn resource_attributes<'a>(p: &'a LogPayload, a: &mut impl Attributes<'a>) {
    // At most one copy per identity key: the top-level value differs from the one under
    // the key only when it is empty and meta's is not, and then meta's is that value.
    let mut copies: [(&'static str, &'a str); 8] = [("", ""); 8];
    let mut n = 0;
    let top = identity(p);
    let meta = p.meta.as_ref().map(meta_identity);
    for (i, (key, payload_key, meta_key, mirror)) in IDENTITY.into_iter().enumerate() {
        let meta_value = meta.map(|m| m[i]);
        // The key GoSight reads carries the top-level value, or meta's if that is empty.
        let value = match meta_value {
            Some(m) if top[i].is_empty() => m,
            _ => top[i],
        };
        put_string(a, key, value);
        if let Some(mirror) = mirror {
            put_string(a, mirror, value);
        }
        if top[i] != value {
            copies[n] = (payload_key, top[i]);
            n += 1;
        }
        if let Some(m) = meta_value.filter(|m| *m != value) {
            copies[n] = (meta_key, m);
            n += 1;
        }
    }
    match &p.meta {
        Some(m) => {
            each_meta(m, |key, v| put_string(a, key, v));
            entries(a, &m.labels, |a, k, v| {
                let prefix = if label_taken(k) { LABEL_ESCAPE } else { "" };
                a.attr(prefix, k, Value::Str(v));
            });
            entries(a, &m.tags, |a, k, v| a.attr(TAG_PREFIX, k, Value::Str(v)));
        }
        None => a.attr("", META_PRESENT, Value::Bool(false)),
    }
    for &(key, v) in &copies[..n] {
        a.attr("", key, Value::Str(v));
    }
}

/// A record's attributes: source, category, pid, `meta` (or the marker of an empty
/// one), fields, tags.
fn record_attributes<'a>(e: &'a LogEntry, a: &mut impl Attributes<'a>) {
    put_string(a, SOURCE, &e.source);
    put_string(a, CATEGORY, &e.category);
    if e.pid != 0 {
        a.attr("", PID, Value::Int(i64::from(e.pid)));
    }
    if let Some(m) = &e.meta {
        let mut empty = m.extra.is_empty();
        each_log_meta(m, |key, v| {
            empty &= v.is_empty();
            put_string(a, key, v);
        });
        entries(a, &m.extra, |a, k, v| {
            a.attr(EXTRA_PREFIX, k, Value::Str(v))
        });
        if empty {
            a.attr("", LOG_META_PRESENT, Value::Bool(true));
        }
    }
    entries(a, &e.fields, |a, k, v| {
        let prefix = if field_taken(k) { FIELD_ESCAPE } else { "" };
        a.attr(prefix, k, Value::Str(v));
    });
    entries(a, &e.tags, |a, k, v| a.attr(TAG_PREFIX, k, Value::Str(v)));
}

/// Nanoseconds since the epoch; 0 ("unknown" in OTLP) for `None` and for times before
/// the epoch, `u64::MAX` after 2554.
fn unix_nanos(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------------------
// Bytes and splitting

/// The request's bytes on the wire (the generated `write_to_bytes`).
///
/// Costs a size pass and a write pass over the message tree [`to_request`] built, on
/// top of the copies it made. [`encode_payload`] writes the same bytes straight from
/// the payload, for about what `wire::encode` costs on the GoSight wire
/// (`cargo bench --bench encode`). Fails only for a request over protobuf's 2 GiB limit
/// ([`Error::PayloadTooLarge`]).
pub fn encode(request: &ExportLogsServiceRequest) -> Result<Vec<u8>, Error> {
    request
        .write_to_bytes()
        .map_err(|_| Error::PayloadTooLarge {
            size: usize::try_from(request.compute_size()).unwrap_or(usize::MAX),
            limit: i32::MAX as usize,
        })
}

/// Parses an `ExportLogsServiceRequest` and reads it as payloads ([`from_request`]).
/// Fails with [`Error::Decode`] on malformed protobuf.
pub fn decode(bytes: &[u8]) -> Result<Vec<LogPayload>, Error> {
    Ok(from_request(ExportLogsServiceRequest::parse_from_bytes(
        bytes,
    )?))
}

/// One request of a split payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The request: the payload's resource and scope, with the entries of `entries`.
    pub request: ExportLogsServiceRequest,
    /// `request`'s encoded size in bytes.
    pub encoded_len: usize,
    /// Which of the payload's entries it carries (indexes into `logs`).
    pub entries: Range<usize>,
}

/// `payload` as requests of at most `max_bytes` each (encoded, before compression;
/// [`MAX_REQUEST_BYTES`] is OTLP collectors' usual limit), its entries in order, as
/// many in each as fit.
///
/// An entry too large to fit under `max_bytes` even alone travels alone, in a chunk
/// whose `encoded_len` says it is over (the caller decides: a collector will likely
/// reject it). A payload with no entries gives no chunk: there is nothing to export.
pub fn split(payload: &LogPayload, max_bytes: usize) -> Vec<Chunk> {
    let resource = resource(payload);
    let empty = request(resource.clone(), Vec::new());
    // The fixed parts: a ResourceLogs without its ScopeLogs, a ScopeLogs without its
    // records. Each level adds a tag byte and a length prefix.
    let resource_part = ResourceLogs {
        resource: MessageField::some(resource.clone()),
        ..Default::default()
    }
    .compute_size();
    let scope_part = ScopeLogs {
        scope: MessageField::some(scope()),
        ..Default::default()
    }
    .compute_size();
    let total = |records: u64| {
        let scope_logs = scope_part + records;
        let resource_logs = resource_part + 1 + varint_len(scope_logs) + scope_logs;
        let request = 1 + varint_len(resource_logs) + resource_logs;
        usize::try_from(request).unwrap_or(usize::MAX)
    };
    debug_assert_eq!(total(0) as u64, empty.compute_size());

    let mut chunks = Vec::new();
    let mut records = Vec::new();
    let mut records_len = 0u64;
    let mut start = 0;
    let mut close = |records: Vec<LogRecord>, len: u64, end: usize, start: &mut usize| {
        chunks.push(Chunk {
            request: request(resource.clone(), records),
            encoded_len: total(len),
            entries: *start..end,
        });
        *start = end;
    };
    for (i, e) in payload.logs.iter().enumerate() {
        let r = record(e, payload.timestamp);
        let size = r.compute_size();
        let framed = 1 + varint_len(size) + size;
        if !records.is_empty() && total(records_len + framed) > max_bytes {
            close(std::mem::take(&mut records), records_len, i, &mut start);
            records_len = 0;
        }
        records.push(r);
        records_len += framed;
    }
    if !records.is_empty() {
        close(records, records_len, payload.logs.len(), &mut start);
    }
    chunks
}

fn varint_len(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

// ---------------------------------------------------------------------------------------
// OTLP → model

/// The payloads of an OTLP request: one per `ResourceLogs`, its `ScopeLogs`' records
/// in order as entries (the inverse of [`to_request`]; see the module's documentation
/// for what does not come back).
///
/// The payload's timestamp is its first record's `observed_time_unix_nano`. A record
/// without `severity_text` gets the level of its number ([`level_of`]).
pub fn from_request(request: ExportLogsServiceRequest) -> Vec<LogPayload> {
    request
        .resource_logs
        .into_iter()
        .map(|rl| {
            let mut payload = payload_of(rl.resource.into_option().unwrap_or_default());
            let mut observed = None;
            for sl in rl.scope_logs {
                for r in sl.log_records {
                    if observed.is_none() {
                        observed = Some(r.observed_time_unix_nano);
                    }
                    payload.logs.push(entry_of(r));
                }
            }
            payload.timestamp = observed.and_then(from_unix_nanos);
            payload
        })
        .collect()
}

fn payload_of(resource: Resource) -> LogPayload {
    let mut meta = Meta::default();
    let mut has_meta = true;
    let mut primary: [Option<String>; 4] = Default::default();
    let mut mirrored: [Option<String>; 4] = Default::default();
    let mut top_copy: [Option<String>; 4] = Default::default();
    let mut meta_copy: [Option<String>; 4] = Default::default();
    for a in resource.attributes {
        let key = a.key;
        let value = a.value.into_option().unwrap_or_default();
        if key == META_PRESENT {
            has_meta = !matches!(value.value, Some(any_value::Value::BoolValue(false)));
            continue;
        }
        let value = text(value);
        if let Some(i) = IDENTITY.iter().position(|id| id.0 == key) {
            primary[i] = Some(value);
        } else if let Some(i) = IDENTITY.iter().position(|id| id.3 == Some(key.as_str())) {
            mirrored[i] = Some(value);
        } else if let Some(i) = IDENTITY.iter().position(|id| id.1 == key) {
            top_copy[i] = Some(value);
        } else if let Some(i) = IDENTITY.iter().position(|id| id.2 == key) {
            meta_copy[i] = Some(value);
        } else if let Some(field) = meta_field(&mut meta, &key) {
            *field = value;
        } else if let Some(label) = key.strip_prefix(LABEL_ESCAPE) {
            meta.labels.insert(label.to_owned(), value);
        } else if let Some(tag) = key.strip_prefix(TAG_PREFIX) {
            meta.tags.insert(tag.to_owned(), value);
        } else {
            meta.labels.insert(key, value);
        }
    }
    let mut payload = LogPayload::default();
    let top = payload_identity(&mut payload);
    let copy = meta_identity_mut(&mut meta);
    for (i, (top, copy)) in top.into_iter().zip(copy).enumerate() {
        // The second key is read only where the first is missing (a sender that writes
        // one of them alone).
        let value = primary[i].take().or(mirrored[i].take()).unwrap_or_default();
        *copy = meta_copy[i].take().unwrap_or_else(|| value.clone());
        *top = top_copy[i].take().unwrap_or(value);
    }
    payload.meta = has_meta.then_some(meta);
    payload
}

fn entry_of(r: LogRecord) -> LogEntry {
    let level = if r.severity_text.is_empty() {
        level_of(r.severity_number.value())
            .map(|l| l.as_str().to_owned())
            .unwrap_or_default()
    } else {
        r.severity_text
    };
    let mut e = LogEntry {
        timestamp: from_unix_nanos(r.time_unix_nano),
        level,
        message: r.body.into_option().map(text).unwrap_or_default(),
        ..Default::default()
    };
    let mut meta = LogMeta::default();
    let mut has_meta = false;
    for a in r.attributes {
        let key = a.key;
        let value = a.value.into_option().unwrap_or_default();
        if key == LOG_META_PRESENT {
            has_meta |= matches!(value.value, Some(any_value::Value::BoolValue(true)));
            continue;
        }
        if key == PID {
            if let Some(pid) = pid_of(&value) {
                e.pid = pid;
                continue;
            }
        }
        let value = text(value);
        match key.as_str() {
            SOURCE => e.source = value,
            CATEGORY => e.category = value,
            _ => {
                if let Some(field) = log_meta_field(&mut meta, &key) {
                    *field = value;
                    has_meta = true;
                } else if let Some(extra) = key.strip_prefix(EXTRA_PREFIX) {
                    meta.extra.insert(extra.to_owned(), value);
                    has_meta = true;
                } else if let Some(tag) = key.strip_prefix(TAG_PREFIX) {
                    e.tags.insert(tag.to_owned(), value);
                } else if let Some(field) = key.strip_prefix(FIELD_ESCAPE) {
                    e.fields.insert(field.to_owned(), value);
                } else {
                    e.fields.insert(key, value);
                }
            }
        }
    }
    e.meta = has_meta.then_some(meta);
    e
}

/// A pid as an int, or as a string of digits (what other senders do); `None` when it
/// does not fit an `i32` (it is then kept as a field).
fn pid_of(v: &AnyValue) -> Option<i32> {
    match &v.value {
        Some(any_value::Value::IntValue(n)) => i32::try_from(*n).ok(),
        Some(any_value::Value::StringValue(s)) => s.parse().ok(),
        _ => None,
    }
}

/// An attribute value or a body as text: strings as they are, numbers and booleans
/// as written in Rust, bytes as UTF-8 (lossy), arrays and key-value lists as
/// `[a,b]` and `{k:v}`.
fn text(v: AnyValue) -> String {
    use any_value::Value;
    match v.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s,
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(n)) => n.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => String::from_utf8_lossy(&b).into_owned(),
        Some(Value::StringValueStrindex(i)) => i.to_string(),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.into_iter().map(text).collect();
            format!("[{}]", items.join(","))
        }
        Some(Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .into_iter()
                .map(|kv| format!("{}:{}", kv.key, text(kv.value.unwrap_or_default())))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

fn from_unix_nanos(n: u64) -> Option<SystemTime> {
    if n == 0 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_nanos(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_is_used_twice() {
        let mut resource: Vec<&str> = META_KEYS.to_vec();
        resource.extend(IDENTITY.iter().flat_map(|i| [i.0, i.1, i.2]));
        resource.extend(IDENTITY.iter().filter_map(|i| i.3));
        resource.push(META_PRESENT);
        let n = resource.len();
        resource.sort_unstable();
        resource.dedup();
        assert_eq!(resource.len(), n, "a resource key is used twice");

        let mut record: Vec<&str> = LOG_META_KEYS.to_vec();
        record.extend([SOURCE, CATEGORY, PID, LOG_META_PRESENT]);
        let n = record.len();
        record.sort_unstable();
        record.dedup();
        assert_eq!(record.len(), n, "a record key is used twice");
        // Every key of the mapping is taken for a label or a field.
        assert!(resource.iter().all(|k| label_taken(k)));
        assert!(record.iter().all(|k| field_taken(k)));
        assert!(GOSIGHT_RECORD_KEYS.iter().all(|k| field_taken(k)));
    }

    #[test]
    fn varint_len_matches_protobuf() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            assert_eq!(
                varint_len(v),
                protobuf::rt::compute_raw_varint64_size(v),
                "{v}"
            );
        }
    }
}
