//! The request written by hand, straight from the model: the bytes of
//! `otlp::encode(&otlp::to_request(p))` without building the message tree (no string is
//! copied; the output is the one allocation).
//!
//! One pass. A length is written once what it counts is: the encoder keeps room for it
//! (2 bytes for a record's, the longest varint for the three around the records),
//! writes what it counts, then the length as the minimal varint protobuf writes, and
//! moves what follows up behind it: the bytes around the records once, a record only
//! when its length does not take 2 bytes. A size pass first, as `wire::encode` has,
//! walked every attribute twice and cost about a third more
//! (`cargo bench --bench encode`).
//!
//! The attributes come from the mapping's own walks ([`super::resource_attributes`],
//! [`super::record_attributes`]); this module only adds the protobuf framing, in the
//! order and with the choices of rust-protobuf's generated serializer: fields in
//! declaration order (`observed_time_unix_nano`, field 11, right after
//! `time_unix_nano`), proto3 defaults left out, a `KeyValue`'s value and a record's
//! body always present, and an `AnyValue`'s string written even when empty (a oneof
//! member is always written). `tests/otlp_encode.rs` checks the two encoders byte for
//! byte on thousands of random payloads.

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
pub(super) const REQUEST_RESOURCE_LOGS: u8 = 1 << 3 | 2;
/// `ResourceLogs.resource` (1).
const RESOURCE_LOGS_RESOURCE: u8 = 1 << 3 | 2;
/// `ResourceLogs.scope_logs` (2).
pub(super) const RESOURCE_LOGS_SCOPE_LOGS: u8 = 2 << 3 | 2;
/// `Resource.attributes` (1).
const RESOURCE_ATTRIBUTES: u8 = 1 << 3 | 2;
/// `ScopeLogs.scope` (1).
const SCOPE_LOGS_SCOPE: u8 = 1 << 3 | 2;
/// `ScopeLogs.log_records` (2).
pub(super) const SCOPE_LOGS_RECORDS: u8 = 2 << 3 | 2;
/// `InstrumentationScope.name` (1).
const SCOPE_NAME_TAG: u8 = 1 << 3 | 2;
/// `InstrumentationScope.version` (2).
const SCOPE_VERSION_TAG: u8 = 2 << 3 | 2;
/// `LogRecord.time_unix_nano` (1, fixed64).
pub(super) const RECORD_TIME: u8 = 1 << 3 | 1;
/// `LogRecord.observed_time_unix_nano` (11, fixed64).
pub(super) const RECORD_OBSERVED: u8 = 11 << 3 | 1;
/// `LogRecord.severity_number` (2, enum).
const RECORD_SEVERITY_NUMBER: u8 = 2 << 3;
/// `LogRecord.severity_text` (3).
const RECORD_SEVERITY_TEXT: u8 = 3 << 3 | 2;
/// `LogRecord.body` (5).
const RECORD_BODY: u8 = 5 << 3 | 2;
/// `LogRecord.attributes` (6).
pub(super) const RECORD_ATTRIBUTES: u8 = 6 << 3 | 2;
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
    put_resource_logs(payload, out);
}

/// `payload` as the bytes of an `ExportLogsServiceRequest`: one `ResourceLogs` record
/// if the request fits in `max_bytes`, else the payload split the way [`super::split`]
/// splits it (its entries in order, as many in each record as fit), each record a
/// request of at most `max_bytes` by itself, one after another. [`parts`] finds them
/// again. A payload with no entries is one record (its resource, no records).
///
/// Byte-identical to [`super::encode`] of [`super::to_request`] (or of each of
/// [`super::split`]'s chunks, concatenated), for about the cost of `wire::encode`:
/// nothing is copied into a message tree first. A payload over the cap costs one more
/// copy of its bytes (it is written whole, then cut).
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
    let mut out = Vec::new();
    let written = put_resource_logs(payload, &mut out);
    if out.len() <= max_bytes {
        // A Vec whose length equals its capacity becomes a grpcio slice without a copy.
        out.shrink_to_fit();
        return Ok(out);
    }
    if payload.logs.is_empty() {
        return Err(too_large(out.len(), max_bytes));
    }
    // The greedy cut of `split`: as many entries as fit, an entry over the cap alone.
    let records = &out[written.records.clone()];
    let request_len = |records: usize| {
        let scope_logs = written.scope.len().saturating_add(records);
        field_len(written.resource.len().saturating_add(field_len(scope_logs)))
    };
    let mut chunks: Vec<Range<usize>> = Vec::new();
    let (mut start, mut at) = (0, 0);
    while at < records.len() {
        // Our own records: one that does not read would be a bug; it ends the cut.
        let end = field_end(records, at, SCOPE_LOGS_RECORDS).unwrap_or(records.len());
        debug_assert!(end > at, "a record the encoder wrote does not read");
        if at > start && request_len(end - start) > max_bytes {
            chunks.push(start..at);
            start = at;
        }
        at = end;
    }
    chunks.push(start..records.len());
    let mut total = 0usize;
    for c in &chunks {
        let size = request_len(c.len());
        if size > max_bytes {
            return Err(too_large(size, max_bytes));
        }
        total = total.saturating_add(size);
    }
    let mut cut = Vec::with_capacity(total);
    for c in chunks {
        let scope_logs = written.scope.len() + c.len();
        let resource_logs = written.resource.len() + field_len(scope_logs);
        put_len(&mut cut, REQUEST_RESOURCE_LOGS, resource_logs);
        cut.extend_from_slice(&out[written.resource.clone()]);
        put_len(&mut cut, RESOURCE_LOGS_SCOPE_LOGS, scope_logs);
        cut.extend_from_slice(&out[written.scope.clone()]);
        cut.extend_from_slice(&records[c]);
    }
    debug_assert_eq!(cut.len(), total, "a size was miscounted");
    Ok(cut)
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
        let end = field_end(bytes, at, REQUEST_RESOURCE_LOGS)?;
        let range = at..end;
        at = end;
        Some(range)
    })
}

/// Where the length-delimited field of one-byte tag `tag` that starts at `at` ends, if
/// one does, within `bytes`.
pub(super) fn field_end(bytes: &[u8], at: usize, tag: u8) -> Option<usize> {
    let rest = bytes.get(at..)?;
    if rest.first() != Some(&tag) {
        return None;
    }
    let mut len = 0u64;
    for (i, &b) in rest.iter().skip(1).take(ROOM).enumerate() {
        // A tenth byte carries bit 63 only; more is not a varint.
        if i == ROOM - 1 && b > 1 {
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
// Writing

/// Where [`put_resource_logs`] put the parts of its record.
pub(super) struct Written {
    /// `ResourceLogs.resource`: tag, length, `Resource`.
    pub(super) resource: Range<usize>,
    /// `ScopeLogs.scope`: tag, length, `InstrumentationScope`.
    pub(super) scope: Range<usize>,
    /// The records, each a `ScopeLogs.log_records` field.
    pub(super) records: Range<usize>,
}

/// Room kept for a length that is known only once what it counts is written: the
/// longest varint. The bytes not needed are closed up after.
const ROOM: usize = 10;

/// Room kept for a record's length: 2 bytes, lengths from 128 to 16 KiB (a record
/// whose length takes more or fewer is moved).
const RECORD_ROOM: usize = 2;

/// Appends `p` as a `ResourceLogs` record, in one pass: each length is written once
/// what it counts is, into room kept for it, and what follows is then moved up.
pub(super) fn put_resource_logs(p: &LogPayload, out: &mut Vec<u8>) -> Written {
    // A guess, so that the buffer seldom grows: 2 KiB for the resource, then each
    // message and 256 bytes for the rest of its record (times, level, attributes).
    let guess = p.logs.iter().fold(2048usize, |n, e| {
        n.saturating_add(e.message.len()).saturating_add(256)
    });
    out.reserve(guess);
    let observed = Observed::Known(unix_nanos(p.timestamp));
    out.push(REQUEST_RESOURCE_LOGS);
    let rl_at = keep_room(out);
    out.push(RESOURCE_LOGS_RESOURCE);
    let resource_at = keep_room(out);
    let mut scratch = Vec::new();
    resource_attributes(
        p,
        &mut Write {
            out: &mut *out,
            tag: RESOURCE_ATTRIBUTES,
            scratch: &mut scratch,
        },
    );
    let resource = out.len() - (resource_at + ROOM);
    out.push(RESOURCE_LOGS_SCOPE_LOGS);
    let sl_at = keep_room(out);
    let scope_at = out.len();
    put_len(out, SCOPE_LOGS_SCOPE, scope_len());
    put_str(out, SCOPE_NAME_TAG, SCOPE_NAME);
    put_str(out, SCOPE_VERSION_TAG, SCOPE_VERSION);
    let records_at = out.len();
    for e in &p.logs {
        put_record(out, e, observed, &mut scratch);
    }
    let scope_logs = out.len() - scope_at;
    let resource_logs = field_len(resource) + field_len(scope_logs);
    let slots = [
        (rl_at, varint_into(&mut out[rl_at..], resource_logs as u64)),
        (
            resource_at,
            varint_into(&mut out[resource_at..], resource as u64),
        ),
        (sl_at, varint_into(&mut out[sl_at..], scope_logs as u64)),
    ];
    let [g1, g2, g3] = close_up(out, &slots);
    let moved = g1 + g2 + g3;
    Written {
        resource: resource_at - 1 - g1..sl_at - 1 - (g1 + g2),
        scope: scope_at - moved..records_at - moved,
        records: records_at - moved..out.len(),
    }
}

/// Appends room for a length ([`ROOM`] bytes); returns where it is.
fn keep_room(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; ROOM]);
    at
}

/// Closes up the room kept at each of `slots` (where it is, how many of its bytes the
/// varint written at its start takes), moving what follows each slot up behind its
/// varint (each byte once). Returns the bytes each slot gave back.
fn close_up<const N: usize>(out: &mut Vec<u8>, slots: &[(usize, usize); N]) -> [usize; N] {
    let mut gaps = [0; N];
    let mut moved = 0;
    for (i, &(at, n)) in slots.iter().enumerate() {
        gaps[i] = ROOM - n;
        moved += gaps[i];
        // Up to the next slot's varint, which moves with what precedes it.
        let end = slots.get(i + 1).map_or(out.len(), |&(next, m)| next + m);
        out.copy_within(at + ROOM..end, at + ROOM - moved);
    }
    out.truncate(out.len() - moved);
    gaps
}

/// A record's `observed_time_unix_nano`: the payload's timestamp.
#[derive(Clone, Copy)]
pub(super) enum Observed {
    /// Known: written unless 0 (a proto3 default).
    Known(u64),
    /// Not known yet (an entry's record, for a [`super::Frame`] to stamp): written as 0,
    /// 8 bytes that the frame sets, or takes out.
    Later,
}

/// Appends `e`'s record (a `ScopeLogs.log_records` field).
pub(super) fn put_record<'a>(
    out: &mut Vec<u8>,
    e: &'a LogEntry,
    observed: Observed,
    scratch: &mut Vec<(&'a String, &'a String)>,
) {
    out.push(SCOPE_LOGS_RECORDS);
    let at = out.len();
    out.extend_from_slice(&[0; RECORD_ROOM]);
    put_record_head(out, unix_nanos(e.timestamp), observed, &e.level, &e.message);
    record_attributes(
        e,
        &mut Write {
            out: &mut *out,
            tag: RECORD_ATTRIBUTES,
            scratch: &mut *scratch,
        },
    );
    let len = out.len() - at - RECORD_ROOM;
    let mut v = [0; ROOM];
    let n = varint_into(&mut v, len as u64);
    if n == RECORD_ROOM {
        out[at..at + n].copy_from_slice(&v[..n]);
    } else {
        out.splice(at..at + RECORD_ROOM, v[..n].iter().copied());
    }
}

/// Appends a `LogRecord`'s fields before its attributes: its times, its severity (from
/// `level`) and its body (`message`).
pub(super) fn put_record_head(
    out: &mut Vec<u8>,
    time: u64,
    observed: Observed,
    level: &str,
    message: &str,
) {
    put_fixed64(out, RECORD_TIME, time);
    match observed {
        Observed::Known(nanos) => put_fixed64(out, RECORD_OBSERVED, nanos),
        Observed::Later => out.extend_from_slice(&[RECORD_OBSERVED, 0, 0, 0, 0, 0, 0, 0, 0]),
    }
    let severity = severity_number(level) as i32;
    if severity != 0 {
        out.push(RECORD_SEVERITY_NUMBER);
        // An enum is an int32: sign-extended to 64 bits on the wire.
        put_varint(out, i64::from(severity) as u64);
    }
    if !level.is_empty() {
        put_str(out, RECORD_SEVERITY_TEXT, level);
    }
    put_len(out, RECORD_BODY, field_len(message.len()));
    put_str(out, STRING_VALUE, message);
}

/// Appends one attribute (a `KeyValue` field of `tag`) whose key is `prefix` followed
/// by `name`.
pub(super) fn put_attr(out: &mut Vec<u8>, tag: u8, prefix: &str, name: &str, value: Value<'_>) {
    let key = prefix.len() + name.len();
    put_len(out, tag, key_value_len(key, value));
    if key != 0 {
        put_len(out, KEY, key);
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    put_len(out, VALUE, any_value_len(value));
    match value {
        Value::Str(s) => put_str(out, STRING_VALUE, s),
        Value::Int(n) => {
            out.push(INT_VALUE);
            put_varint(out, n as u64);
        }
        Value::Bool(b) => out.extend_from_slice(&[BOOL_VALUE, u8::from(b)]),
    }
}

/// Writes the attributes it is handed as repeated `KeyValue` fields of `tag`.
struct Write<'a, 'o> {
    out: &'o mut Vec<u8>,
    tag: u8,
    scratch: &'o mut Vec<(&'a String, &'a String)>,
}

impl<'a> Attributes<'a> for Write<'a, '_> {
    fn attr(&mut self, prefix: &'static str, name: &'a str, value: Value<'a>) {
        put_attr(self.out, self.tag, prefix, name, value);
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
pub(super) fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn varint_len(v: u64) -> usize {
    if v < 0x80 {
        return 1; // most lengths here
    }
    // 1 byte per started group of 7 bits.
    (64 - v.leading_zeros() as usize).div_ceil(7)
}

/// Writes `v` as a varint at the start of `buf` (at least 10 bytes); returns its length.
fn varint_into(buf: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field's tag and length.
pub(super) fn put_len(out: &mut Vec<u8>, tag: u8, len: usize) {
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
    fn field_end_reads_lengths_and_stops_on_garbage() {
        let end = |bytes: &[u8], at| field_end(bytes, at, REQUEST_RESOURCE_LOGS);
        assert_eq!(end(&[0x0a, 0x00], 0), Some(2));
        assert_eq!(end(&[0x0a, 0x01, 0xff], 0), Some(3));
        assert_eq!(end(&[0x0a, 0x02, 0xff], 0), None);
        assert_eq!(end(&[0x12, 0x00], 0), None);
        assert_eq!(field_end(&[0x12, 0x00], 0, SCOPE_LOGS_RECORDS), Some(2));
        assert_eq!(end(&[0x0a], 0), None);
        assert_eq!(end(&[0x0a, 0x80], 0), None);
        assert_eq!(end(&[], 0), None);
        assert_eq!(end(&[0x0a, 0x00], 5), None);
        let mut long = vec![0x0a, 0x80, 0x01];
        long.resize(3 + 128, 0);
        assert_eq!(end(&long, 0), Some(131));
        // Ten-byte lengths: the largest varint (far past the end), one more bit (not a
        // varint), eleven bytes (not one either).
        let max = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(end(&max, 0), None);
        let over = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ];
        assert_eq!(end(&over, 0), None);
        let eleven = [
            0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
        ];
        assert_eq!(end(&eleven, 0), None);
    }

    #[test]
    fn varints_match_protobuf() {
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
            let want = protobuf::rt::compute_raw_varint64_size(v);
            assert_eq!(varint_len(v) as u64, want, "{v}");
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut buf = [0; ROOM];
            assert_eq!(varint_into(&mut buf, v), out.len(), "{v}");
            assert_eq!(&buf[..out.len()], &out[..], "{v}");
        }
    }

    #[test]
    fn close_up_moves_each_part_behind_its_length() {
        // [a][room: 1-byte varint][b b][room: 2-byte varint][c c c]
        let mut out = vec![b'a'];
        let first = keep_room(&mut out);
        out.extend_from_slice(b"bb");
        let second = keep_room(&mut out);
        out.extend_from_slice(b"ccc");
        let slots = [
            (first, varint_into(&mut out[first..], 5)),
            (second, varint_into(&mut out[second..], 300)),
        ];
        assert_eq!(close_up(&mut out, &slots), [ROOM - 1, ROOM - 2]);
        assert_eq!(out, [b'a', 5, b'b', b'b', 0xac, 0x02, b'c', b'c', b'c']);
    }
}
