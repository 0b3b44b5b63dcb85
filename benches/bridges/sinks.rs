//! The sink process (`__sink`): two grpcio servers on one completion queue that count
//! log records exactly, built from the throughput sink's parts (`../throughput/sink.rs`):
//!
//! - GoSight: `/proto.LogService/SubmitStream`, a client stream answered like GoSight
//!   (status OK, no message); each `LogPayload`'s entries are counted by walking its
//!   top-level fields (field 6, `logs`), nothing is decoded;
//! - OTLP: `/opentelemetry.proto.collector.logs.v1.LogsService/Export`, unary, the
//!   throughput sink's handler (`../common/otlp_sink.rs`): each `ResourceLogs` counts as
//!   a message and each `LogRecord` as a record, by walking tags and lengths; answered
//!   with an empty `ExportLogsServiceResponse`. The sampled requests (below) are also
//!   decoded with opentelemetry-proto's prost types, the exporter's own, and a count
//!   that disagrees with the decode is flagged in the sample.
//!
//! Besides `COUNT` (messages, bytes, OK answers, CPU seconds, records), the parent may
//! ask `SAMPLE`: a one-line description of the first record of the largest message that
//! arrived since the previous `SAMPLE` (what the wire carried for one line, and what a
//! full batch weighs).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use grpcio::{GrpcSlice, Marshaller, MessageReader, Method, MethodType};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use prost::Message as _;

use crate::otlp_sink::{count_export, export_method, otlp_service, Export};
use crate::protocol::{de_vec, ser_vec, PATH};
use crate::sink::{bind, serve, sink_env, stream_service, Counted, SinkCounts};

/// The size of the largest message described since the last `SAMPLE`, and its
/// description.
static SAMPLE_BYTES: AtomicU64 = AtomicU64::new(0);
static SAMPLE: Mutex<String> = Mutex::new(String::new());

/// Describes a message of `bytes` bytes if it is the largest so far (a decode only for
/// each new maximum: a handful per row).
fn sample(bytes: usize, describe: impl FnOnce() -> String) {
    let bytes = bytes as u64;
    if SAMPLE_BYTES.fetch_max(bytes, Relaxed) < bytes {
        let description = describe();
        let mut sample = SAMPLE.lock().unwrap_or_else(|e| e.into_inner());
        // A larger one may have been described meanwhile.
        if SAMPLE_BYTES.load(Relaxed) == bytes {
            *sample = description;
        }
    }
}

pub fn sink_main() {
    let counts = Arc::new(SinkCounts::default());
    let env = sink_env();
    // Servers live until the process exits.
    let (_gosight, gosight_port) = bind(&env, 0, || {
        vec![stream_service(&counts, &GOSIGHT_METHOD, false)]
    });
    let (_otlp, otlp_port) = bind(&env, 0, || vec![otlp_service(&counts, &OTLP_SAMPLED)]);
    serve(&counts, &[gosight_port, otlp_port], |line| {
        (line == "SAMPLE").then(|| {
            let mut sample = SAMPLE.lock().unwrap_or_else(|e| e.into_inner());
            SAMPLE_BYTES.store(0, Relaxed);
            format!("SAMPLE {}", std::mem::take(&mut *sample))
        })
    });
}

/// A GoSight message as the sink sees it.
pub struct Payload {
    bytes: u64,
    entries: u64,
}

impl Counted for Payload {
    fn bytes(&self) -> u64 {
        self.bytes
    }
    fn records(&self) -> u64 {
        self.entries
    }
}

const GOSIGHT_METHOD: Method<Payload, Vec<u8>> = Method {
    ty: MethodType::ClientStreaming,
    name: PATH,
    req_mar: Marshaller {
        ser: never_serialized::<Payload>,
        de: de_payload,
    },
    resp_mar: Marshaller {
        ser: ser_vec,
        de: de_vec,
    },
};

/// Requests are never serialized by a server.
fn never_serialized<T>(_: &T, _: &mut GrpcSlice) -> grpcio::Result<()> {
    Ok(())
}

fn codec_error(what: &str) -> grpcio::Error {
    grpcio::Error::Codec(what.to_string().into())
}

fn de_payload(reader: MessageReader) -> grpcio::Result<Payload> {
    let bytes = de_vec(reader)?;
    let entries = count_field(&bytes, 6).ok_or_else(|| codec_error("not a LogPayload"))?;
    sample(bytes.len(), || describe_gosight(&bytes, entries));
    Ok(Payload {
        bytes: bytes.len() as u64,
        entries,
    })
}

/// How many times top-level field `field` occurs in protobuf message `buf` (`None` if it
/// does not parse as one).
fn count_field(mut buf: &[u8], field: u64) -> Option<u64> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut count = 0;
    while !buf.is_empty() {
        let tag = varint(&mut buf)?;
        let skip = match tag & 7 {
            0 => {
                varint(&mut buf)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(&mut buf)?).ok()?,
            5 => 4,
            _ => return None,
        };
        buf = buf.get(skip..)?;
        if tag >> 3 == field {
            count += 1;
        }
    }
    Some(count)
}

fn describe_gosight(bytes: &[u8], entries: u64) -> String {
    let Ok(payload) = logsender::wire::decode(bytes) else {
        return "gosight: undecodable payload".into();
    };
    let Some(e) = payload.logs.first() else {
        return "gosight: empty payload".into();
    };
    let mut fields: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    fields.sort();
    format!(
        "GoSight LogEntry: level={:?} source={:?} pid={} timestamp={} message={:?} ({} bytes) \
         fields: {}; {} entries in a {}-byte payload ({:.0} bytes per entry)",
        e.level,
        e.source,
        e.pid,
        e.timestamp.is_some(),
        e.message,
        e.message.len(),
        fields.join(", "),
        entries,
        bytes.len(),
        bytes.len() as f64 / entries.max(1) as f64,
    )
}

/// The OTLP server's deserializer: the shared count (`../common/otlp_sink.rs`), and for
/// each new largest request a full decode with opentelemetry-proto's prost types (the
/// exporter's own) that describes it and checks the count.
const OTLP_SAMPLED: Method<Export, Vec<u8>> = export_method(de_export_sampled);

fn de_export_sampled(reader: MessageReader) -> grpcio::Result<Export> {
    let bytes = de_vec(reader)?;
    let export = count_export(&mut bytes.as_slice(), bytes.len())
        .ok_or_else(|| codec_error("not an ExportLogsServiceRequest"))?;
    sample(bytes.len(), || {
        let Ok(request) = ExportLogsServiceRequest::decode(bytes.as_slice()) else {
            return "otlp: undecodable request".into();
        };
        let records: usize = request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        let mut description = describe_otlp(&request, bytes.len(), export.records);
        if (request.resource_logs.len() as u64, records as u64) != (export.payloads, export.records)
        {
            description.push_str(&format!(
                " WARNING: the sink counted {} ResourceLogs and {} records, prost decoded {} and {records}",
                export.payloads,
                export.records,
                request.resource_logs.len()
            ));
        }
        description
    });
    Ok(export)
}

fn any(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => format!("{s:?}"),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => "none".into(),
    }
}

fn describe_otlp(request: &ExportLogsServiceRequest, bytes: usize, records: u64) -> String {
    let Some(resource) = request.resource_logs.first() else {
        return "otlp: empty request".into();
    };
    let Some(scope) = resource.scope_logs.first() else {
        return "otlp: no scope".into();
    };
    let Some(r) = scope.log_records.first() else {
        return "otlp: no record".into();
    };
    let attributes: Vec<String> = r
        .attributes
        .iter()
        .map(|kv| format!("{}={}", kv.key, any(&kv.value)))
        .collect();
    let resource_attributes = resource.resource.as_ref().map_or(0, |r| r.attributes.len());
    let body = any(&r.body);
    format!(
        "OTLP LogRecord: severity={} {:?} scope={:?} event_name={:?} time={} observed={} \
         body={body} ({} bytes) attributes: {}; {} records in a {bytes}-byte request \
         ({:.0} bytes per record; {resource_attributes} resource attributes)",
        r.severity_number,
        r.severity_text,
        scope.scope.as_ref().map_or("", |s| s.name.as_str()),
        r.event_name,
        r.time_unix_nano != 0,
        r.observed_time_unix_nano != 0,
        body.len().saturating_sub(2),
        attributes.join(", "),
        records,
        bytes as f64 / records.max(1) as f64,
    )
}
