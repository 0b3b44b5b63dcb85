//! The bridge between the [`crate::model`] types and the bytes on the wire: protobuf
//! encoding and decoding of [`LogPayload`] exactly as the GoSight protocol defines it.
//!
//! Decoding goes through the rust-protobuf code generated from `proto/*.proto` ([`pb`]).
//! Encoding is written by hand, straight from the model: in the throughput benchmark the
//! generated encoder (fed by a by-value conversion, which allocates a message tree and
//! frees it) cost 15–45% more client CPU per payload on 2.8 KB and 21 KB payloads
//! (about the same on 208 KB ones). `tests/wire_equivalence.rs`
//! checks the two against each other on thousands of random payloads filled through
//! protobuf reflection, every field of every message included.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::{Message, MessageField};

use crate::error::Error;
use crate::model::{LogEntry, LogMeta, LogPayload, Meta};

/// Generated rust-protobuf types for `proto/*.proto`. You rarely need these.
///
/// Messages live in [`pb::log`] (`LogPayload`, `LogEntry`, `LogMeta`, `LogResponse`) and
/// [`pb::meta`] (`Meta`); timestamps are [`protobuf::well_known_types::timestamp::Timestamp`].
pub mod pb {
    // The generated items carry no doc comments; the crate denies missing docs.
    #![allow(missing_docs)]
    // The generated code is not written to the crate's lint and style rules (it already
    // allows clippy::all itself; these cover lints a crate may turn on on top of that).
    #![allow(
        unused_qualifications,
        unreachable_pub,
        clippy::pedantic,
        clippy::nursery
    )]

    include!(concat!(env!("OUT_DIR"), "/proto/mod.rs"));
}

/// Serializes `payload` to exactly the bytes one `LogPayload` message carries on the wire.
///
/// Byte-identical to `pb::log::LogPayload::from(payload).write_to_bytes()`, but written
/// straight from `payload` without copying its strings first.
pub fn encode(payload: &LogPayload) -> Vec<u8> {
    let mut sizes = Sizes::with_capacity(payload.logs.len() * 2 + 1);
    let len = payload_size(payload, &mut sizes);
    // Exactly `len` bytes: a Vec whose length equals its capacity becomes a grpcio
    // slice without a copy.
    let mut buf = Vec::with_capacity(len);
    put_payload(&mut buf, payload, &mut sizes.into_iter());
    debug_assert_eq!(buf.len(), len, "encoded_len disagrees with encode");
    buf
}

/// Parses the bytes of one `LogPayload` message.
///
/// Fails with [`Error::Decode`] on malformed protobuf and on a timestamp that is not a
/// valid `google.protobuf.Timestamp` or not representable as a [`SystemTime`].
pub fn decode(bytes: &[u8]) -> Result<LogPayload, Error> {
    let msg = pb::log::LogPayload::parse_from_bytes(bytes)?;
    LogPayload::try_from(msg)
}

/// Copies the strings and maps of `p` (a clone, then the by-value conversion below).
impl From<&LogPayload> for pb::log::LogPayload {
    fn from(p: &LogPayload) -> Self {
        Self::from(p.clone())
    }
}

/// Moves the strings and maps of `p` into the generated message instead of copying them.
impl From<LogPayload> for pb::log::LogPayload {
    fn from(p: LogPayload) -> Self {
        pb::log::LogPayload {
            agent_id: p.agent_id,
            host_id: p.host_id,
            hostname: p.hostname,
            endpoint_id: p.endpoint_id,
            timestamp: timestamp_field(p.timestamp),
            logs: p.logs.into_iter().map(entry_into_pb).collect(),
            meta: MessageField::from_option(p.meta.map(meta_into_pb)),
            ..Default::default()
        }
    }
}

impl TryFrom<pb::log::LogPayload> for LogPayload {
    type Error = Error;

    fn try_from(p: pb::log::LogPayload) -> Result<Self, Error> {
        Ok(LogPayload {
            agent_id: p.agent_id,
            host_id: p.host_id,
            hostname: p.hostname,
            endpoint_id: p.endpoint_id,
            timestamp: timestamp_from_field(&p.timestamp)?,
            logs: p
                .logs
                .into_iter()
                .map(entry_from_pb)
                .collect::<Result<_, _>>()?,
            meta: p.meta.into_option().map(meta_from_pb),
        })
    }
}

/// Builds a `$to` from `$from`, moving each listed field (same name on both sides),
/// then adds `$rest` (`..Default::default()` for a generated message's hidden fields).
macro_rules! move_fields {
    ($($to:ident)::+, $from:ident, [$($field:ident),*]; $($rest:tt)*) => {
        $($to)::+ { $($field: $from.$field,)* $($rest)* }
    };
}

/// Converts between the model's and the generated `LogMeta` (one list of field names
/// serves both directions).
macro_rules! convert_log_meta {
    ($($to:ident)::+, $from:ident; $($rest:tt)*) => {
        move_fields!($($to)::+, $from, [
            platform, app_name, app_version, container_id, container_name, unit, service,
            event_id, user, executable, path, extra
        ]; $($rest)*)
    };
}

/// Converts between the model's and the generated `Meta`, like [`convert_log_meta`].
macro_rules! convert_meta {
    ($($to:ident)::+, $from:ident; $($rest:tt)*) => {
        move_fields!($($to)::+, $from, [
            hostname, ip_address, os, os_version, kernel_version, architecture,
            cloud_provider, region, availability_zone, instance_id, instance_type,
            account_id, project_id, resource_group, vpc_id, subnet_id, image_id,
            service_id, container_id, container_name, pod_name, namespace, cluster_name,
            node_name, container_image_name, container_image_id, application, environment,
            service, version, deployment_id, public_ip, private_ip, mac_address,
            network_interface, labels, endpoint_id, platform, platform_family,
            platform_version, kernel_architecture, virtualization_system,
            virtualization_role, host_id, agent_version, agent_id, resource_id, kind, tags
        ]; $($rest)*)
    };
}

fn log_meta_into_pb(m: LogMeta) -> pb::log::LogMeta {
    convert_log_meta!(pb::log::LogMeta, m; ..Default::default())
}

fn log_meta_from_pb(m: pb::log::LogMeta) -> LogMeta {
    convert_log_meta!(LogMeta, m;)
}

fn meta_into_pb(m: Meta) -> pb::meta::Meta {
    convert_meta!(pb::meta::Meta, m; ..Default::default())
}

fn meta_from_pb(m: pb::meta::Meta) -> Meta {
    convert_meta!(Meta, m;)
}

fn entry_into_pb(e: LogEntry) -> pb::log::LogEntry {
    pb::log::LogEntry {
        timestamp: timestamp_field(e.timestamp),
        level: e.level,
        message: e.message,
        source: e.source,
        category: e.category,
        pid: e.pid,
        fields: e.fields,
        tags: e.tags,
        meta: MessageField::from_option(e.meta.map(log_meta_into_pb)),
        ..Default::default()
    }
}

fn entry_from_pb(e: pb::log::LogEntry) -> Result<LogEntry, Error> {
    Ok(LogEntry {
        timestamp: timestamp_from_field(&e.timestamp)?,
        level: e.level,
        message: e.message,
        source: e.source,
        category: e.category,
        pid: e.pid,
        fields: e.fields,
        tags: e.tags,
        meta: e.meta.into_option().map(log_meta_from_pb),
    })
}

fn timestamp_field(t: Option<SystemTime>) -> MessageField<Timestamp> {
    MessageField::from_option(t.map(timestamp_to_pb))
}

fn timestamp_from_field(t: &MessageField<Timestamp>) -> Result<Option<SystemTime>, Error> {
    t.as_ref().map(timestamp_from_pb).transpose()
}

/// Exact to the nanosecond, before the epoch too: `seconds` is floored, `nanos` counts
/// forward from it. Every `SystemTime` on Unix fits; elsewhere out-of-range seconds saturate.
fn timestamp_to_pb(t: SystemTime) -> Timestamp {
    let (seconds, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (i128::from(d.as_secs()), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            match d.subsec_nanos() {
                0 => (-i128::from(d.as_secs()), 0),
                n => (-i128::from(d.as_secs()) - 1, 1_000_000_000 - n),
            }
        }
    };
    let seconds = i64::try_from(seconds).unwrap_or(if seconds < 0 { i64::MIN } else { i64::MAX });
    Timestamp {
        seconds,
        // Always in 0..=999_999_999, so the cast is lossless.
        nanos: nanos as i32,
        ..Default::default()
    }
}

fn timestamp_from_pb(t: &Timestamp) -> Result<SystemTime, Error> {
    let nanos = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| bad_timestamp(t, "nanos outside 0..=999999999"))?;
    let secs = Duration::from_secs(t.seconds.unsigned_abs());
    let whole = if t.seconds >= 0 {
        UNIX_EPOCH.checked_add(secs)
    } else {
        UNIX_EPOCH.checked_sub(secs)
    };
    whole
        .and_then(|w| w.checked_add(Duration::from_nanos(u64::from(nanos))))
        .ok_or_else(|| bad_timestamp(t, "not representable as SystemTime"))
}

#[cold]
fn bad_timestamp(t: &Timestamp, why: &str) -> Error {
    let msg = format!(
        "invalid google.protobuf.Timestamp {{ seconds: {}, nanos: {} }}: {why}",
        t.seconds, t.nanos
    );
    Error::Decode(protobuf::Error::from(io::Error::new(
        io::ErrorKind::InvalidData,
        msg,
    )))
}

// ---------------------------------------------------------------------------------------
// Direct encoder: writes the model straight to bytes, without first cloning every string
// into the generated structs. Produces the same bytes as the generated `write_to_bytes`
// (same field order, proto3 defaults skipped, map entries always carry key and value);
// `encode_matches_generated_encoder` checks that.

const VARINT: u32 = 0;
const LEN: u32 = 2;

/// Serialized size in bytes of `payload`, i.e. `encode(payload).len()`, without encoding.
pub fn encoded_len(payload: &LogPayload) -> usize {
    payload_size(payload, &mut Sizes::new())
}

/// How many bytes `entry` adds to an encoded `LogPayload` (its field 6 record).
pub fn entry_len(entry: &LogEntry) -> usize {
    let (len, _) = entry_sizes(entry);
    nested_size(6, len)
}

/// The sizes of the nested messages (entries, their `LogMeta`, the `Meta`), in the
/// order the encoder meets them: computed once by `payload_size`, read back by
/// `put_payload` instead of being recomputed at every level.
type Sizes = Vec<usize>;

/// Reads the next precomputed size.
fn next_size(sizes: &mut impl Iterator<Item = usize>) -> usize {
    sizes.next().unwrap_or_default()
}

fn varint_size(v: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 needs one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag_size(field: u32) -> usize {
    varint_size(u64::from(field << 3))
}

fn str_size(field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        tag_size(field) + varint_size(s.len() as u64) + s.len()
    }
}

/// Size of a length-delimited field holding `len` bytes.
fn nested_size(field: u32, len: usize) -> usize {
    tag_size(field) + varint_size(len as u64) + len
}

fn map_entry_size(k: &str, v: &str) -> usize {
    // Key and value are written even when empty, like the generated code does.
    2 + varint_size(k.len() as u64) + k.len() + varint_size(v.len() as u64) + v.len()
}

fn map_size(field: u32, m: &HashMap<String, String>) -> usize {
    m.iter()
        .map(|(k, v)| nested_size(field, map_entry_size(k, v)))
        .sum()
}

fn timestamp_size(t: &Timestamp) -> usize {
    let mut n = 0;
    if t.seconds != 0 {
        n += 1 + varint_size(t.seconds as u64);
    }
    if t.nanos != 0 {
        n += 1 + varint_size(i64::from(t.nanos) as u64);
    }
    n
}

fn log_meta_size(m: &LogMeta) -> usize {
    log_meta_strings(m)
        .iter()
        .map(|(f, s)| str_size(*f, s))
        .sum::<usize>()
        + map_size(12, &m.extra)
}

fn entry_size(e: &LogEntry, sizes: &mut Sizes) -> usize {
    let (n, meta) = entry_sizes(e);
    sizes.push(n);
    sizes.extend(meta);
    n
}

/// An entry's encoded size and its `LogMeta`'s, if it has one.
fn entry_sizes(e: &LogEntry) -> (usize, Option<usize>) {
    let mut n = 0;
    if let Some(t) = e.timestamp {
        n += nested_size(1, timestamp_size(&timestamp_to_pb(t)));
    }
    n += str_size(2, &e.level) + str_size(3, &e.message);
    n += str_size(4, &e.source) + str_size(5, &e.category);
    if e.pid != 0 {
        n += 1 + varint_size(i64::from(e.pid) as u64);
    }
    n += map_size(7, &e.fields) + map_size(8, &e.tags);
    let meta = e.meta.as_ref().map(log_meta_size);
    if let Some(len) = meta {
        n += nested_size(9, len);
    }
    (n, meta)
}

fn meta_size(m: &Meta) -> usize {
    let strings = |a: &[(u32, &str)]| a.iter().map(|(f, s)| str_size(*f, s)).sum::<usize>();
    strings(&meta_strings_1_35(m))
        + map_size(36, &m.labels)
        + strings(&meta_strings_37_48(m))
        + map_size(49, &m.tags)
}

fn payload_size(p: &LogPayload, sizes: &mut Sizes) -> usize {
    let mut n = str_size(1, &p.agent_id) + str_size(2, &p.host_id);
    n += str_size(3, &p.hostname) + str_size(4, &p.endpoint_id);
    if let Some(t) = p.timestamp {
        n += nested_size(5, timestamp_size(&timestamp_to_pb(t)));
    }
    n += p
        .logs
        .iter()
        .map(|e| nested_size(6, entry_size(e, sizes)))
        .sum::<usize>();
    if let Some(m) = &p.meta {
        let len = meta_size(m);
        sizes.push(len);
        n += nested_size(7, len);
    }
    n
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_tag(buf: &mut Vec<u8>, field: u32, wire_type: u32) {
    put_varint(buf, u64::from((field << 3) | wire_type));
}

/// Writes the tag and length prefix of a length-delimited field.
fn put_len(buf: &mut Vec<u8>, field: u32, len: usize) {
    put_tag(buf, field, LEN);
    put_varint(buf, len as u64);
}

/// Writes a string field, skipped when empty (proto3 default).
fn put_str(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_raw_str(buf, field, s);
    }
}

fn put_raw_str(buf: &mut Vec<u8>, field: u32, s: &str) {
    put_len(buf, field, s.len());
    buf.extend_from_slice(s.as_bytes());
}

fn put_map(buf: &mut Vec<u8>, field: u32, m: &HashMap<String, String>) {
    for (k, v) in m {
        put_len(buf, field, map_entry_size(k, v));
        put_raw_str(buf, 1, k);
        put_raw_str(buf, 2, v);
    }
}

fn put_timestamp(buf: &mut Vec<u8>, field: u32, t: SystemTime) {
    let t = timestamp_to_pb(t);
    put_len(buf, field, timestamp_size(&t));
    if t.seconds != 0 {
        put_tag(buf, 1, VARINT);
        put_varint(buf, t.seconds as u64);
    }
    if t.nanos != 0 {
        put_tag(buf, 2, VARINT);
        put_varint(buf, i64::from(t.nanos) as u64);
    }
}

fn put_log_meta(buf: &mut Vec<u8>, field: u32, m: &LogMeta, len: usize) {
    put_len(buf, field, len);
    for (f, s) in log_meta_strings(m) {
        put_str(buf, f, s);
    }
    put_map(buf, 12, &m.extra);
}

fn put_entry(buf: &mut Vec<u8>, field: u32, e: &LogEntry, sizes: &mut impl Iterator<Item = usize>) {
    put_len(buf, field, next_size(sizes));
    if let Some(t) = e.timestamp {
        put_timestamp(buf, 1, t);
    }
    put_str(buf, 2, &e.level);
    put_str(buf, 3, &e.message);
    put_str(buf, 4, &e.source);
    put_str(buf, 5, &e.category);
    if e.pid != 0 {
        put_tag(buf, 6, VARINT);
        // int32 is sign-extended to 64 bits on the wire.
        put_varint(buf, i64::from(e.pid) as u64);
    }
    put_map(buf, 7, &e.fields);
    put_map(buf, 8, &e.tags);
    if let Some(m) = &e.meta {
        put_log_meta(buf, 9, m, next_size(sizes));
    }
}

fn put_meta(buf: &mut Vec<u8>, field: u32, m: &Meta, len: usize) {
    put_len(buf, field, len);
    for (f, s) in meta_strings_1_35(m) {
        put_str(buf, f, s);
    }
    put_map(buf, 36, &m.labels);
    for (f, s) in meta_strings_37_48(m) {
        put_str(buf, f, s);
    }
    put_map(buf, 49, &m.tags);
}

fn put_payload(buf: &mut Vec<u8>, p: &LogPayload, sizes: &mut impl Iterator<Item = usize>) {
    put_str(buf, 1, &p.agent_id);
    put_str(buf, 2, &p.host_id);
    put_str(buf, 3, &p.hostname);
    put_str(buf, 4, &p.endpoint_id);
    if let Some(t) = p.timestamp {
        put_timestamp(buf, 5, t);
    }
    for e in &p.logs {
        put_entry(buf, 6, e, sizes);
    }
    if let Some(m) = &p.meta {
        put_meta(buf, 7, m, next_size(sizes));
    }
}

// ---------------------------------------------------------------------------------------
// Pre-encoded entries. The entry level encodes each entry on the producer's thread (its
// strings are freed where they were allocated) and the batcher joins the records behind
// the template's bytes: a repeated field on the wire is the concatenation of its records,
// so the payload is byte-identical to `encode` of the same payload built as a tree
// (`tests/wire_equivalence.rs` checks it).

/// The most bytes a payload's timestamp field takes: tag, length, seconds (a negative
/// `int64` is 10 bytes) and nanoseconds (999,999,999 is 5), each with its tag.
pub(crate) const MAX_TIMESTAMP_FIELD: usize = 1 + 1 + (1 + 10) + (1 + 5);

/// `entry` encoded as one record of a `LogPayload`'s `logs` (field 6: tag, length, body);
/// its length is [`entry_len`].
pub fn entry_record(entry: &LogEntry) -> Vec<u8> {
    let (len, meta) = entry_sizes(entry);
    put_record(entry, len, meta)
}

/// [`entry_record`], unless the record would be longer than `room` bytes: then its
/// length (and nothing is allocated).
pub(crate) fn entry_record_within(entry: &LogEntry, room: usize) -> Result<Vec<u8>, usize> {
    let (len, meta) = entry_sizes(entry);
    let total = nested_size(6, len);
    if total > room {
        return Err(total);
    }
    Ok(put_record(entry, len, meta))
}

/// The record of `entry`, whose body is `len` bytes and `LogMeta` `meta` bytes.
fn put_record(entry: &LogEntry, len: usize, meta: Option<usize>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(nested_size(6, len));
    put_entry(&mut buf, 6, entry, &mut std::iter::once(len).chain(meta));
    buf
}

/// Writes one entry record straight from borrowed parts, in field order, for the
/// bridges (no [`LogEntry`] in between): the same bytes as [`entry_record`] of the entry
/// with these parts and its fields in the order given (a field written twice is sent
/// twice; a decoder keeps the last, as protobuf's maps do). The body is written to a scratch
/// buffer the caller keeps; [`RecordWriter::finish`] copies it behind its prefix.
pub(crate) struct RecordWriter<'a> {
    body: &'a mut Vec<u8>,
    text: &'a mut String,
}

impl<'a> RecordWriter<'a> {
    /// Starts a record with fields 1 to 6 (`category` stays empty).
    pub(crate) fn start(
        body: &'a mut Vec<u8>,
        text: &'a mut String,
        timestamp: SystemTime,
        level: &str,
        message: &str,
        source: &str,
        pid: i32,
    ) -> RecordWriter<'a> {
        body.clear();
        put_timestamp(body, 1, timestamp);
        put_str(body, 2, level);
        put_str(body, 3, message);
        put_str(body, 4, source);
        if pid != 0 {
            put_tag(body, 6, VARINT);
            put_varint(body, i64::from(pid) as u64);
        }
        RecordWriter { body, text }
    }

    /// Adds an entry of `fields` (field 7).
    pub(crate) fn field(&mut self, key: &str, value: &str) {
        put_len(self.body, 7, map_entry_size(key, value));
        put_raw_str(self.body, 1, key);
        put_raw_str(self.body, 2, value);
    }

    /// Adds an entry of `fields` whose value is `value` formatted.
    pub(crate) fn field_fmt(&mut self, key: &str, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        self.text.clear();
        // Writing to a String fails only if the value's formatting does: keep what it
        // wrote.
        let _ = self.text.write_fmt(value);
        put_len(self.body, 7, map_entry_size(key, self.text));
        put_raw_str(self.body, 1, key);
        put_raw_str(self.body, 2, self.text);
    }

    /// The record: tag, length and body, in a buffer of exactly its size.
    pub(crate) fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(nested_size(6, self.body.len()));
        put_len(&mut out, 6, self.body.len());
        out.extend_from_slice(self.body);
        out
    }
}

/// A template's bytes around its entries: fields 1 to 4 before them, `meta` after, and
/// the timestamp between (the template's own, or the time a batch is cut). What the
/// entry level assembles its payloads with.
///
/// ```
/// use std::time::SystemTime;
/// use logsender::{wire, Level, LogEntry, LogPayload};
///
/// let template = LogPayload::from_host("agent-1");
/// let entry = LogEntry::new(Level::Info, "hello");
/// let records = vec![wire::entry_record(&entry)];
/// let now = SystemTime::now();
/// let bytes = wire::Frame::of(&template).assemble(&records, now);
/// let mut payload = template.clone();
/// payload.timestamp = Some(now);
/// payload.logs.push(entry);
/// assert_eq!(bytes, wire::encode(&payload));
/// ```
#[derive(Debug, Clone)]
pub struct Frame {
    head: Vec<u8>,
    stamp: Option<SystemTime>,
    tail: Vec<u8>,
}

impl Frame {
    /// The frame of `template` (whose entries, if any, are left out).
    pub fn of(template: &LogPayload) -> Frame {
        let mut head = Vec::new();
        put_str(&mut head, 1, &template.agent_id);
        put_str(&mut head, 2, &template.host_id);
        put_str(&mut head, 3, &template.hostname);
        put_str(&mut head, 4, &template.endpoint_id);
        let mut tail = Vec::new();
        if let Some(m) = &template.meta {
            put_meta(&mut tail, 7, m, meta_size(m));
        }
        Frame {
            head,
            stamp: template.timestamp,
            tail,
        }
    }

    /// The payload carrying `records` (each one made by [`entry_record`]), stamped with
    /// the template's timestamp or else `now`, in a buffer of exactly its size.
    pub fn assemble(&self, records: &[Vec<u8>], now: SystemTime) -> Vec<u8> {
        let stamp = self.stamp.unwrap_or(now);
        let stamp_len = nested_size(5, timestamp_size(&timestamp_to_pb(stamp)));
        let len = records
            .iter()
            .fold(0usize, |n, r| n.saturating_add(r.len()));
        let total = [self.head.len(), stamp_len, len, self.tail.len()]
            .iter()
            .fold(0usize, |n, l| n.saturating_add(*l));
        let mut buf = Vec::with_capacity(total);
        buf.extend_from_slice(&self.head);
        put_timestamp(&mut buf, 5, stamp);
        for r in records {
            buf.extend_from_slice(r);
        }
        buf.extend_from_slice(&self.tail);
        debug_assert_eq!(buf.len(), total, "a record's length was miscounted");
        buf
    }
}

/// LogMeta's string fields 1..=11, in field order.
fn log_meta_strings(m: &LogMeta) -> [(u32, &str); 11] {
    [
        (1, &m.platform),
        (2, &m.app_name),
        (3, &m.app_version),
        (4, &m.container_id),
        (5, &m.container_name),
        (6, &m.unit),
        (7, &m.service),
        (8, &m.event_id),
        (9, &m.user),
        (10, &m.executable),
        (11, &m.path),
    ]
}

/// Meta's string fields 1..=35, in field order.
fn meta_strings_1_35(m: &Meta) -> [(u32, &str); 35] {
    [
        (1, &m.hostname),
        (2, &m.ip_address),
        (3, &m.os),
        (4, &m.os_version),
        (5, &m.kernel_version),
        (6, &m.architecture),
        (7, &m.cloud_provider),
        (8, &m.region),
        (9, &m.availability_zone),
        (10, &m.instance_id),
        (11, &m.instance_type),
        (12, &m.account_id),
        (13, &m.project_id),
        (14, &m.resource_group),
        (15, &m.vpc_id),
        (16, &m.subnet_id),
        (17, &m.image_id),
        (18, &m.service_id),
        (19, &m.container_id),
        (20, &m.container_name),
        (21, &m.pod_name),
        (22, &m.namespace),
        (23, &m.cluster_name),
        (24, &m.node_name),
        (25, &m.container_image_name),
        (26, &m.container_image_id),
        (27, &m.application),
        (28, &m.environment),
        (29, &m.service),
        (30, &m.version),
        (31, &m.deployment_id),
        (32, &m.public_ip),
        (33, &m.private_ip),
        (34, &m.mac_address),
        (35, &m.network_interface),
    ]
}

/// Meta's string fields 37..=48, in field order.
fn meta_strings_37_48(m: &Meta) -> [(u32, &str); 12] {
    [
        (37, &m.endpoint_id),
        (38, &m.platform),
        (39, &m.platform_family),
        (40, &m.platform_version),
        (41, &m.kernel_architecture),
        (42, &m.virtualization_system),
        (43, &m.virtualization_role),
        (44, &m.host_id),
        (45, &m.agent_version),
        (46, &m.agent_id),
        (47, &m.resource_id),
        (48, &m.kind),
    ]
}

#[cfg(test)]
mod tests {
    use protobuf::CodedOutputStream;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn full_meta() -> Meta {
        Meta {
            hostname: "höst-01".into(),
            ip_address: "10.0.0.1".into(),
            os: "linux".into(),
            os_version: "6.1".into(),
            kernel_version: "6.1.0-13-amd64".into(),
            architecture: "x86_64".into(),
            cloud_provider: "aws".into(),
            region: "eu-central-1".into(),
            availability_zone: "eu-central-1a".into(),
            instance_id: "i-0123".into(),
            instance_type: "t3.micro".into(),
            account_id: "1234".into(),
            project_id: "proj".into(),
            resource_group: "rg".into(),
            vpc_id: "vpc-1".into(),
            subnet_id: "subnet-1".into(),
            image_id: "ami-1".into(),
            service_id: "svc-1".into(),
            container_id: "abc123".into(),
            container_name: "web".into(),
            pod_name: "web-7d9f".into(),
            namespace: "default".into(),
            cluster_name: "prod-cluster".into(),
            node_name: "node-1".into(),
            container_image_name: "nginx".into(),
            container_image_id: "sha256:beef".into(),
            application: "shop 🛒".into(),
            environment: "prod".into(),
            service: "checkout".into(),
            version: "1.2.3".into(),
            deployment_id: "dep-9".into(),
            public_ip: "203.0.113.7".into(),
            private_ip: "10.0.0.2".into(),
            mac_address: "00:11:22:33:44:55".into(),
            network_interface: "eth0".into(),
            labels: map(&[("team", "ops"), ("tier", "web"), ("ключ", "значение")]),
            endpoint_id: "host-abc".into(),
            platform: "debian".into(),
            platform_family: "debian".into(),
            platform_version: "12".into(),
            kernel_architecture: "x86_64".into(),
            virtualization_system: "kvm".into(),
            virtualization_role: "guest".into(),
            host_id: "hid-1".into(),
            agent_version: "0.9".into(),
            agent_id: "agent-😀".into(),
            resource_id: "res-1".into(),
            kind: "host".into(),
            tags: map(&[("a", "1"), ("b", "2"), ("日本", "語")]),
        }
    }

    fn full_payload() -> LogPayload {
        LogPayload {
            agent_id: "agent-😀".into(),
            host_id: "hid-1".into(),
            hostname: "höst-01".into(),
            endpoint_id: "host-abc".into(),
            timestamp: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)),
            logs: vec![
                LogEntry {
                    timestamp: Some(UNIX_EPOCH - Duration::new(86_400, 1)),
                    level: "error".into(),
                    message: "naïve café 🚀 failed\nline 2".into(),
                    source: "/var/log/app.log".into(),
                    category: "app".into(),
                    pid: -42,
                    fields: map(&[("k1", "v1"), ("k2", ""), ("", "empty key")]),
                    tags: map(&[("x", "y"), ("z", "🦀")]),
                    meta: Some(LogMeta {
                        platform: "docker".into(),
                        app_name: "shop".into(),
                        app_version: "1.0".into(),
                        container_id: "abc".into(),
                        container_name: "web".into(),
                        unit: "shop.service".into(),
                        service: "shop".into(),
                        event_id: "4624".into(),
                        user: "www-data".into(),
                        executable: "/usr/bin/shop".into(),
                        path: "/srv/shop".into(),
                        extra: map(&[("e1", "1"), ("e2", "2"), ("e3", "3")]),
                    }),
                },
                LogEntry {
                    timestamp: Some(UNIX_EPOCH - Duration::from_millis(200)),
                    level: "info".into(),
                    message: "second".into(),
                    pid: i32::MAX,
                    ..Default::default()
                },
            ],
            meta: Some(full_meta()),
        }
    }

    #[test]
    fn full_payload_round_trips() {
        let p = full_payload();
        let bytes = encode(&p);
        assert_eq!(decode(&bytes).unwrap(), p);
    }

    fn assert_same_as_generated(p: &LogPayload) {
        let generated = pb::log::LogPayload::from(p).write_to_bytes().unwrap();
        let direct = encode(p);
        assert_eq!(encoded_len(p), direct.len());
        // Cloning a HashMap keeps its hasher and bucket layout, so the generated struct
        // iterates its maps in the same order as `p` does: the bytes must be identical.
        assert_eq!(direct, generated);
        // And independent of map order: both decode to the original.
        let parsed = pb::log::LogPayload::parse_from_bytes(&direct).unwrap();
        assert_eq!(LogPayload::try_from(parsed).unwrap(), *p);
    }

    #[test]
    fn encode_matches_generated_encoder() {
        assert_same_as_generated(&full_payload());
        assert_same_as_generated(&LogPayload::default());
        let long = "ü".repeat(70_000);
        let mut p = full_payload();
        p.timestamp = Some(UNIX_EPOCH);
        p.meta
            .as_mut()
            .unwrap()
            .labels
            .insert(long.clone(), String::new());
        p.logs.extend((0..300).map(|i| LogEntry {
            timestamp: Some(UNIX_EPOCH - Duration::new(i, (i as u32) * 3_000_001)),
            message: long[..(i as usize) * 2].to_string(),
            pid: i32::MIN + i as i32,
            tags: map(&[("", "")]),
            meta: (i % 2 == 0).then(LogMeta::default),
            ..Default::default()
        }));
        assert_same_as_generated(&p);
    }

    #[test]
    fn absent_and_present_empty_survive() {
        let absent = LogPayload {
            logs: vec![LogEntry::default()],
            ..Default::default()
        };
        let empty = LogPayload {
            timestamp: Some(UNIX_EPOCH),
            logs: vec![LogEntry {
                timestamp: Some(UNIX_EPOCH),
                meta: Some(LogMeta::default()),
                ..Default::default()
            }],
            meta: Some(Meta::default()),
            ..Default::default()
        };
        assert_eq!(decode(&encode(&absent)).unwrap(), absent);
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
        assert_ne!(encode(&absent), encode(&empty));
        assert_eq!(decode(&[]).unwrap(), LogPayload::default());
    }

    #[test]
    fn timestamps_are_exact() {
        let times = [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(0, 1),
            UNIX_EPOCH - Duration::new(0, 1),
            UNIX_EPOCH - Duration::new(1, 0),
            UNIX_EPOCH - Duration::new(62_135_596_800, 999_999_999),
            UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999),
            SystemTime::now(),
        ];
        for t in times {
            let ts = timestamp_to_pb(t);
            assert!((0..1_000_000_000).contains(&ts.nanos), "{ts:?}");
            assert_eq!(timestamp_from_pb(&ts).unwrap(), t);
        }
        // On Unix every (seconds, valid nanos) is a SystemTime: the extremes round-trip too.
        #[cfg(unix)]
        for (seconds, nanos) in [(i64::MIN, 0), (i64::MIN, 1), (i64::MAX, 999_999_999)] {
            let ts = Timestamp {
                seconds,
                nanos,
                ..Default::default()
            };
            assert_eq!(timestamp_to_pb(timestamp_from_pb(&ts).unwrap()), ts);
        }
        let ts = timestamp_to_pb(UNIX_EPOCH - Duration::from_millis(200));
        assert_eq!((ts.seconds, ts.nanos), (-1, 800_000_000));
        let ts = timestamp_to_pb(UNIX_EPOCH - Duration::from_secs(3));
        assert_eq!((ts.seconds, ts.nanos), (-3, 0));
    }

    fn payload_with_timestamp(seconds: i64, nanos: i32) -> Vec<u8> {
        let msg = pb::log::LogPayload {
            timestamp: MessageField::some(Timestamp {
                seconds,
                nanos,
                ..Default::default()
            }),
            ..Default::default()
        };
        msg.write_to_bytes().unwrap()
    }

    #[test]
    fn bad_timestamps_are_errors() {
        for (s, n) in [(0, 1_000_000_000), (0, -1), (-5, i32::MIN)] {
            match decode(&payload_with_timestamp(s, n)) {
                Err(Error::Decode(e)) => assert!(e.to_string().contains("Timestamp"), "{e}"),
                other => panic!("({s}, {n}) decoded as {other:?}"),
            }
        }
        assert!(decode(&payload_with_timestamp(-1, 999_999_999)).is_ok());
    }

    #[test]
    fn no_timestamp_field_is_longer_than_the_bound() {
        let epoch = UNIX_EPOCH;
        let times = [
            epoch,
            epoch + Duration::new(1_700_000_000, 999_999_999),
            epoch - Duration::new(1, 1),
            epoch - Duration::new(62_135_596_800, 0),
            epoch + Duration::new(253_402_300_799, 999_999_999),
        ];
        let longest = times
            .iter()
            .map(|t| nested_size(5, timestamp_size(&timestamp_to_pb(*t))))
            .max();
        assert_eq!(longest, Some(MAX_TIMESTAMP_FIELD));
    }

    #[test]
    fn garbage_is_an_error() {
        for bytes in [
            &[0xff, 0xff, 0xff][..],
            &[0x0a, 0x05, b'a'][..],             // truncated string
            &[0x0a, 0x02, 0xc3, 0x28][..],       // invalid UTF-8
            &[0x32, 0x03, 0x1a, 0x09, b'x'][..], // truncated nested entry
            &[0x07][..],                         // wire type 7
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ][..],
        ] {
            assert!(decode(bytes).is_err(), "{bytes:x?}");
        }
    }

    /// Hand-encodes with raw field numbers, independent of the generated code.
    #[test]
    fn field_numbers_match_design() {
        let mut entry_meta = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut entry_meta);
            os.write_string(2, "app").unwrap();
            os.write_string(11, "/p").unwrap();
            os.flush().unwrap();
        }
        let mut ts = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut ts);
            os.write_int64(1, -2).unwrap();
            os.write_int32(2, 5).unwrap();
            os.flush().unwrap();
        }
        let mut entry = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut entry);
            os.write_bytes(1, &ts).unwrap();
            os.write_string(2, "warn").unwrap();
            os.write_string(3, "hello").unwrap();
            os.write_string(5, "cat").unwrap();
            os.write_int32(6, -7).unwrap();
            let mut kv = Vec::new();
            {
                let mut kos = CodedOutputStream::vec(&mut kv);
                kos.write_string(1, "fk").unwrap();
                kos.write_string(2, "fv").unwrap();
                kos.flush().unwrap();
            }
            os.write_bytes(7, &kv).unwrap();
            os.write_bytes(9, &entry_meta).unwrap();
            os.flush().unwrap();
        }
        let mut meta = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut meta);
            os.write_string(1, "mh").unwrap();
            os.write_string(35, "eth0").unwrap();
            os.write_string(46, "aid").unwrap();
            os.write_string(48, "host").unwrap();
            let mut kv = Vec::new();
            {
                let mut kos = CodedOutputStream::vec(&mut kv);
                kos.write_string(1, "tk").unwrap();
                kos.write_string(2, "tv").unwrap();
                kos.flush().unwrap();
            }
            os.write_bytes(49, &kv).unwrap();
            os.flush().unwrap();
        }
        let mut bytes = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut bytes);
            os.write_string(1, "agent").unwrap();
            os.write_string(3, "hn").unwrap();
            os.write_string(4, "ep").unwrap();
            os.write_bytes(6, &entry).unwrap();
            os.write_bytes(7, &meta).unwrap();
            os.flush().unwrap();
        }

        let p = decode(&bytes).unwrap();
        let expected = LogPayload {
            agent_id: "agent".into(),
            hostname: "hn".into(),
            endpoint_id: "ep".into(),
            logs: vec![LogEntry {
                timestamp: Some(UNIX_EPOCH - Duration::new(1, 999_999_995)),
                level: "warn".into(),
                message: "hello".into(),
                category: "cat".into(),
                pid: -7,
                fields: map(&[("fk", "fv")]),
                meta: Some(LogMeta {
                    app_name: "app".into(),
                    path: "/p".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            meta: Some(Meta {
                hostname: "mh".into(),
                network_interface: "eth0".into(),
                agent_id: "aid".into(),
                kind: "host".into(),
                tags: map(&[("tk", "tv")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(p, expected);
        // Field order is ascending in both, maps have one entry: bytes must match too.
        assert_eq!(encode(&expected), bytes);
    }
}
