//! The request written by hand, straight from the model: the bytes of
//! `otlp::encode(&otlp::to_request(p))` without building the message tree (no string is
//! copied, nothing is allocated but the output and one size per entry).
//!
//! Two passes, as `wire::encode` does: the first adds up the size of every entry's
//! record and of the resource (their lengths prefix them, as minimal varints), the
//! second writes. The attributes come from the mapping's own walks
//! ([`super::resource_attributes`], [`super::record_attributes`]); this module only
//! adds the protobuf framing, in the order and with the choices of rust-protobuf's
//! generated serializer: fields in declaration order (`observed_time_unix_nano`, field
//! 11, right after `time_unix_nano`), proto3 defaults left out, a `KeyValue`'s value and
//! a record's body always present, and an `AnyValue`'s string written even when empty
//! (a oneof member is always written). `tests/otlp_encode.rs` checks the two encoders
//! byte for byte on thousands of random payloads.

use std::ops::Range;

use super::{
    record_attributes, resource_attributes, severity_number, unix_nanos, Attributes, Value,
    SCOPE_NAME,
};
use crate::error::Error;
use crate::model::{LogEntry, LogPayload};

/// The scope's version: the crate's.
const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

// Tags (field number << 3 | wire type), all one byte. Wire types: 0 varint, 1 fixed64,
// 2 length-delimited.
/// `ExportLogsServiceRequest.resource_logs` (1).
const REQUEST_RESOURCE_LOGS: u8 = 1 << 3 | 2;
/// `ResourceLogs.resource` (1).
const RESOURCE_LOGS_RESOURCE: u8 = 1 << 3 | 2;
/// `ResourceLogs.scope_logs` (2).
const RESOURCE_LOGS_SCOPE_LOGS: u8 = 2 << 3 | 2;
/// `Resource.attributes` (1).
const RESOURCE_ATTRIBUTES: u8 = 1 << 3 | 2;
/// `ScopeLogs.scope` (1).
const SCOPE_LOGS_SCOPE: u8 = 1 << 3 | 2;
/// `ScopeLogs.log_records` (2).
const SCOPE_LOGS_RECORDS: u8 = 2 << 3 | 2;
/// `InstrumentationScope.name` (1).
const SCOPE_NAME_TAG: u8 = 1 << 3 | 2;
/// `InstrumentationScope.version` (2).
const SCOPE_VERSION_TAG: u8 = 2 << 3 | 2;
/// `LogRecord.time_unix_nano` (1, fixed64).
const RECORD_TIME: u8 = 1 << 3 | 1;
/// `LogRecord.observed_time_unix_nano` (11, fixed64).
const RECORD_OBSERVED: u8 = 11 << 3 | 1;
/// `LogRecord.severity_number` (2, enum).
const RECORD_SEVERITY_NUMBER: u8 = 2 << 3;
/// `LogRecord.severity_text` (3).
const RECORD_SEVERITY_TEXT: u8 = 3 << 3 | 2;
/// `LogRecord.body` (5).
const RECORD_BODY: u8 = 5 << 3 | 2;
/// `LogRecord.attributes` (6).
const RECORD_ATTRIBUTES: u8 = 6 << 3 | 2;
/// `KeyValue.key` (1).
const KEY: u8 = 1 << 3 | 2;
/// `KeyValue.value` (2).
const VALUE: u8 = 2 << 3 | 2;
/// `AnyValue.string_value` (1).
const STRING_VALUE: u8 = 1 << 3 | 2;
/// `AnyValue.bool_value` (2).
const BOOL_VALUE: u8 = 2 << 3;
/// `AnyValue.int_value` (3).
const INT_VALUE: u8 = 3 << 3;

/// Appends the bytes of one `ResourceLogs` (the whole payload: its resource, one
/// `ScopeLogs`, a record per entry) as field 1 of an `ExportLogsServiceRequest`. Alone,
/// they are exactly [`super::encode`] of [`super::to_request`]; several payloads'
/// records one after another are the request holding them all, in order. No cap: see
/// [`encode_payload`] for one.
///
/// ```
/// use logsender::otlp;
/// use logsender::{Level, LogEntry, LogPayload};
///
/// let mut a = LogPayload::from_host("agent-1");
/// a.logs.push(LogEntry::new(Level::Info, "one"));
/// let mut b = LogPayload::from_host("agent-2");
/// b.logs.push(LogEntry::new(Level::Error, "two"));
/// let mut request = Vec::new();
/// otlp::encode_resource_logs(&a, &mut request);
/// otlp::encode_resource_logs(&b, &mut request);
/// assert_eq!(otlp::decode(&request)?, vec![a, b]);
/// # Ok::<(), logsender::Error>(())
/// ```
pub fn encode_resource_logs(payload: &LogPayload, out: &mut Vec<u8>) {
    let plan = Plan::of(payload);
    let records = plan.records_len(0..payload.logs.len());
    out.reserve(plan.request_len(records));
    plan.put(payload, 0..payload.logs.len(), records, out);
}

/// `payload` as the bytes of an `ExportLogsServiceRequest`: one `ResourceLogs` record
/// if the request fits in `max_bytes`, else the payload split the way [`super::split`]
/// splits it (its entries in order, as many in each record as fit), each record a
/// request of at most `max_bytes` by itself, one after another. [`parts`] finds them
/// again. A payload with no entries is one record (its resource, no records).
///
/// Byte-identical to [`super::encode`] of [`super::to_request`] (or of each of
/// [`super::split`]'s chunks, concatenated), for about the cost of `wire::encode`:
/// nothing is copied into a message tree first.
///
/// Fails with [`Error::PayloadTooLarge`] (`limit` = `max_bytes`, `size` = the request
/// that entry would be alone) when an entry does not fit under `max_bytes` even alone,
/// or a payload without entries does not.
///
/// ```
/// use logsender::otlp;
/// use logsender::{Level, LogEntry, LogPayload};
///
/// let mut payload = LogPayload::from_host("agent-1");
/// payload.logs = (0..100)
///     .map(|i| LogEntry::new(Level::Info, format!("line {i}: {}", "x".repeat(100))))
///     .collect();
/// // Under OTLP's usual cap: one record, the same bytes as the generated encoder's.
/// let whole = otlp::encode_payload(&payload, otlp::MAX_REQUEST_BYTES)?;
/// assert_eq!(whole, otlp::encode(&otlp::to_request(&payload))?);
/// assert_eq!(otlp::parts(&whole).count(), 1);
///
/// // Under a 4 KiB cap: several records, each a request of at most 4 KiB.
/// let split = otlp::encode_payload(&payload, 4096)?;
/// let parts: Vec<_> = otlp::parts(&split).collect();
/// assert!(parts.len() > 1 && parts.iter().all(|r| r.len() <= 4096));
/// let entries: usize = otlp::decode(&split)?.iter().map(|p| p.logs.len()).sum();
/// assert_eq!(entries, 100);
///
/// // An entry that cannot fit alone.
/// payload.logs.push(LogEntry::new(Level::Info, "y".repeat(5000)));
/// assert!(matches!(
///     otlp::encode_payload(&payload, 4096),
///     Err(logsender::Error::PayloadTooLarge { limit: 4096, .. })
/// ));
/// # Ok::<(), logsender::Error>(())
/// ```
pub fn encode_payload(payload: &LogPayload, max_bytes: usize) -> Result<Vec<u8>, Error> {
    let plan = Plan::of(payload);
    let all = 0..payload.logs.len();
    let records = plan.records_len(all.clone());
    let whole = plan.request_len(records);
    if whole <= max_bytes {
        // Exactly `whole` bytes: a Vec whose length equals its capacity becomes a grpcio
        // slice without a copy.
        let mut out = Vec::with_capacity(whole);
        plan.put(payload, all, records, &mut out);
        debug_assert_eq!(out.len(), whole, "a size was miscounted");
        return Ok(out);
    }
    if payload.logs.is_empty() {
        return Err(too_large(whole, max_bytes));
    }
    // The greedy cut of `split`: as many entries as fit, an entry over the cap alone.
    let mut chunks: Vec<(Range<usize>, usize)> = Vec::new();
    let (mut start, mut len) = (0, 0usize);
    for (i, r) in plan.records.iter().enumerate() {
        let framed = r.framed_len();
        if i > start && plan.request_len(len.saturating_add(framed)) > max_bytes {
            chunks.push((start..i, len));
            (start, len) = (i, 0);
        }
        len = len.saturating_add(framed);
    }
    chunks.push((start..payload.logs.len(), len));
    let mut total = 0usize;
    for (_, records) in &chunks {
        let size = plan.request_len(*records);
        if size > max_bytes {
            return Err(too_large(size, max_bytes));
        }
        total = total.saturating_add(size);
    }
    let mut out = Vec::with_capacity(total);
    for (entries, records) in chunks {
        plan.put(payload, entries, records, &mut out);
    }
    debug_assert_eq!(out.len(), total, "a size was miscounted");
    Ok(out)
}

fn too_large(size: usize, limit: usize) -> Error {
    Error::PayloadTooLarge { size, limit }
}

/// The byte ranges of the top-level `resource_logs` records (field 1: tag `0x0a`, a
/// varint length, the body) of a request's bytes, in order, each a request by itself:
/// how the parts of a split payload ([`encode_payload`]) are found again without
/// decoding them.
///
/// Stops at the first byte that does not start such a record, or at a record that runs
/// past the end: on well-formed bytes the last range ends at `bytes.len()`, which is how
/// a caller tells garbage from the end.
///
/// ```
/// use logsender::otlp;
/// use logsender::LogPayload;
///
/// let mut bytes = otlp::encode_payload(&LogPayload::from_host("a"), usize::MAX)?;
/// let first = bytes.len();
/// bytes.extend(otlp::encode_payload(&LogPayload::from_host("b"), usize::MAX)?);
/// let parts: Vec<_> = otlp::parts(&bytes).collect();
/// assert_eq!(parts, vec![0..first, first..bytes.len()]);
/// assert_eq!(otlp::parts(&bytes[..first + 3]).count(), 1); // a truncated second record
/// # Ok::<(), logsender::Error>(())
/// ```
pub fn parts(bytes: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let end = record_end(bytes, at)?;
        let range = at..end;
        at = end;
        Some(range)
    })
}

/// Where the field-1 record starting at `at` ends, if one does and ends within `bytes`.
fn record_end(bytes: &[u8], at: usize) -> Option<usize> {
    let rest = bytes.get(at..)?;
    if rest.first() != Some(&REQUEST_RESOURCE_LOGS) {
        return None;
    }
    let mut len = 0u64;
    for (i, &b) in rest.iter().skip(1).take(10).enumerate() {
        // A tenth byte carries bit 63 only; more is not a varint.
        if i == 9 && b > 1 {
            return None;
        }
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let body = usize::try_from(len).ok()?;
            let end = at.checked_add(2 + i)?.checked_add(body)?;
            return (end <= bytes.len()).then_some(end);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Sizes, then bytes

/// What the first pass learns, for the second: the resource's size and each entry's.
struct Plan {
    /// The `Resource` message's size.
    resource: usize,
    /// The payload's `observed_time_unix_nano` (its timestamp), 0 for none.
    observed: u64,
    records: Vec<Record>,
}

/// An entry's record, as the first pass measured it.
struct Record {
    /// The `LogRecord` message's size.
    len: usize,
    time: u64,
    severity: i32,
}

impl Record {
    /// Its bytes as a repeated field of `ScopeLogs` (tag, length, message).
    fn framed_len(&self) -> usize {
        field_len(self.len)
    }
}

impl Plan {
    fn of(p: &LogPayload) -> Plan {
        let mut resource = Sizes::default();
        resource_attributes(p, &mut resource);
        let observed = unix_nanos(p.timestamp);
        let records = p
            .logs
            .iter()
            .map(|e| {
                let time = unix_nanos(e.timestamp);
                let severity = severity_number(&e.level) as i32;
                let mut attrs = Sizes::default();
                record_attributes(e, &mut attrs);
                let mut len = attrs.0 + field_len(field_len(e.message.len()));
                len += fixed64_len(time) + fixed64_len(observed);
                if severity != 0 {
                    len += 1 + varint_len(i64::from(severity) as u64);
                }
                if !e.level.is_empty() {
                    len += field_len(e.level.len());
                }
                Record {
                    len,
                    time,
                    severity,
                }
            })
            .collect();
        Plan {
            resource: resource.0,
            observed,
            records,
        }
    }

    /// The framed records of `entries`.
    fn records_len(&self, entries: Range<usize>) -> usize {
        self.records[entries]
            .iter()
            .fold(0, |n, r| n.saturating_add(r.framed_len()))
    }

    /// The `ScopeLogs` message around records of `records` bytes.
    fn scope_logs_len(records: usize) -> usize {
        field_len(scope_len()).saturating_add(records)
    }

    /// The `ResourceLogs` message around records of `records` bytes.
    fn resource_logs_len(&self, records: usize) -> usize {
        field_len(self.resource).saturating_add(field_len(Self::scope_logs_len(records)))
    }

    /// The request (one `ResourceLogs`) around records of `records` bytes.
    fn request_len(&self, records: usize) -> usize {
        field_len(self.resource_logs_len(records))
    }

    /// Writes the `ResourceLogs` record of `entries`, whose framed records are
    /// `records` bytes.
    fn put(&self, p: &LogPayload, entries: Range<usize>, records: usize, out: &mut Vec<u8>) {
        put_len(out, REQUEST_RESOURCE_LOGS, self.resource_logs_len(records));
        put_len(out, RESOURCE_LOGS_RESOURCE, self.resource);
        let mut scratch = Vec::new();
        resource_attributes(
            p,
            &mut Write {
                out: &mut *out,
                tag: RESOURCE_ATTRIBUTES,
                scratch: &mut scratch,
            },
        );
        put_len(out, RESOURCE_LOGS_SCOPE_LOGS, Self::scope_logs_len(records));
        put_len(out, SCOPE_LOGS_SCOPE, scope_len());
        put_str(out, SCOPE_NAME_TAG, SCOPE_NAME);
        put_str(out, SCOPE_VERSION_TAG, SCOPE_VERSION);
        for (e, r) in p.logs[entries.clone()].iter().zip(&self.records[entries]) {
            put_record(out, e, r, self.observed, &mut scratch);
        }
    }
}

fn put_record<'a>(
    out: &mut Vec<u8>,
    e: &'a LogEntry,
    r: &Record,
    observed: u64,
    scratch: &mut Vec<(&'a String, &'a String)>,
) {
    put_len(out, SCOPE_LOGS_RECORDS, r.len);
    put_fixed64(out, RECORD_TIME, r.time);
    put_fixed64(out, RECORD_OBSERVED, observed);
    if r.severity != 0 {
        out.push(RECORD_SEVERITY_NUMBER);
        // An enum is an int32: sign-extended to 64 bits on the wire.
        put_varint(out, i64::from(r.severity) as u64);
    }
    if !e.level.is_empty() {
        put_str(out, RECORD_SEVERITY_TEXT, &e.level);
    }
    put_len(out, RECORD_BODY, field_len(e.message.len()));
    put_str(out, STRING_VALUE, &e.message);
    record_attributes(
        e,
        &mut Write {
            out: &mut *out,
            tag: RECORD_ATTRIBUTES,
            scratch: &mut *scratch,
        },
    );
}

/// The first pass: adds up the attributes' sizes as repeated `KeyValue` fields.
#[derive(Default)]
struct Sizes<'a>(usize, Vec<(&'a String, &'a String)>);

impl<'a> Attributes<'a> for Sizes<'a> {
    const ORDERED: bool = false;

    fn attr(&mut self, prefix: &'static str, name: &'a str, value: Value<'a>) {
        self.0 += field_len(key_value_len(prefix.len() + name.len(), value));
    }

    fn scratch(&mut self) -> &mut Vec<(&'a String, &'a String)> {
        &mut self.1
    }
}

/// The second pass: writes the attributes as repeated `KeyValue` fields of `tag`.
struct Write<'a, 'o> {
    out: &'o mut Vec<u8>,
    tag: u8,
    scratch: &'o mut Vec<(&'a String, &'a String)>,
}

impl<'a> Attributes<'a> for Write<'a, '_> {
    const ORDERED: bool = true;

    fn attr(&mut self, prefix: &'static str, name: &'a str, value: Value<'a>) {
        let key = prefix.len() + name.len();
        put_len(self.out, self.tag, key_value_len(key, value));
        if key != 0 {
            put_len(self.out, KEY, key);
            self.out.extend_from_slice(prefix.as_bytes());
            self.out.extend_from_slice(name.as_bytes());
        }
        put_len(self.out, VALUE, any_value_len(value));
        match value {
            Value::Str(s) => put_str(self.out, STRING_VALUE, s),
            Value::Int(n) => {
                self.out.push(INT_VALUE);
                put_varint(self.out, n as u64);
            }
            Value::Bool(b) => self.out.extend_from_slice(&[BOOL_VALUE, u8::from(b)]),
        }
    }

    fn scratch(&mut self) -> &mut Vec<(&'a String, &'a String)> {
        self.scratch
    }
}

/// `InstrumentationScope`'s size: its name and version (neither is empty).
fn scope_len() -> usize {
    field_len(SCOPE_NAME.len()) + field_len(SCOPE_VERSION.len())
}

/// A `KeyValue`'s size: its key of `key` bytes (left out when empty, a proto3 default)
/// and its value (always there).
fn key_value_len(key: usize, value: Value<'_>) -> usize {
    let key = if key == 0 { 0 } else { field_len(key) };
    key + field_len(any_value_len(value))
}

/// An `AnyValue`'s size: its one member, written even when it is the default.
fn any_value_len(value: Value<'_>) -> usize {
    match value {
        Value::Str(s) => field_len(s.len()),
        Value::Int(n) => 1 + varint_len(n as u64),
        Value::Bool(_) => 2,
    }
}

/// A length-delimited field of `len` bytes with a one-byte tag.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A fixed64 field: left out when 0.
fn fixed64_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        9
    }
}

fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 needs one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field's tag and length.
fn put_len(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    put_varint(out, len as u64);
}

fn put_str(out: &mut Vec<u8>, tag: u8, s: &str) {
    put_len(out, tag, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_fixed64(out: &mut Vec<u8>, tag: u8, v: u64) {
    if v != 0 {
        out.push(tag);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_end_reads_lengths_and_stops_on_garbage() {
        assert_eq!(record_end(&[0x0a, 0x00], 0), Some(2));
        assert_eq!(record_end(&[0x0a, 0x01, 0xff], 0), Some(3));
        assert_eq!(record_end(&[0x0a, 0x02, 0xff], 0), None);
        assert_eq!(record_end(&[0x12, 0x00], 0), None);
        assert_eq!(record_end(&[0x0a], 0), None);
        assert_eq!(record_end(&[0x0a, 0x80], 0), None);
        assert_eq!(record_end(&[], 0), None);
        assert_eq!(record_end(&[0x0a, 0x00], 5), None);
        let mut long = vec![0x0a, 0x80, 0x01];
        long.resize(3 + 128, 0);
        assert_eq!(record_end(&long, 0), Some(131));
        // Ten-byte lengths: the largest varint, and one more bit, which is not one.
        let max = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(record_end(&max, 0), None);
        let over = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ];
        assert_eq!(record_end(&over, 0), None);
        let eleven = [
            0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
        ];
        assert_eq!(record_end(&eleven, 0), None);
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
                varint_len(v) as u64,
                protobuf::rt::compute_raw_varint64_size(v),
                "{v}"
            );
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }
}
