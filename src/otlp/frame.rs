//! The entry level's OTLP pieces: an entry encoded alone as a record ([`entry_record`]),
//! and a template's bytes around records ([`Frame`]), joined into exactly the request
//! [`super::encode_payload`] writes for the payload they make. What `wire::entry_record`
//! and `wire::Frame` are on the GoSight wire, with one difference: a `LogRecord` carries
//! its payload's timestamp (`observed_time_unix_nano`), which is not known when the
//! entry is encoded. The record keeps 8 bytes for it, that [`Frame::assemble`] sets as
//! it copies the record (or takes out, for a timestamp OTLP writes as 0).

use std::time::SystemTime;

use super::encode::{
    field_end, field_len, put_attr, put_len, put_record, put_record_head, put_resource_logs,
    Observed, RECORD_ATTRIBUTES, RECORD_OBSERVED, RECORD_TIME, REQUEST_RESOURCE_LOGS,
    RESOURCE_LOGS_SCOPE_LOGS, SCOPE_LOGS_RECORDS,
};
use super::{field_taken, unix_nanos, Value, FIELD_ESCAPE, PID, SOURCE};
use crate::model::{LogEntry, LogPayload};

/// `entry` encoded as one record of a `ScopeLogs`'s `log_records` (field 2: tag, length,
/// `LogRecord`), its `observed_time_unix_nano` left for [`Frame::assemble`] to set.
pub fn entry_record(entry: &LogEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.message.len().saturating_add(256));
    put_record(&mut out, entry, Observed::Later, &mut Vec::new());
    out
}

/// [`entry_record`], unless the record would be longer than `room` bytes: then its
/// length (the record is written to be measured: OTLP's encoder is one pass).
pub(crate) fn entry_record_within(entry: &LogEntry, room: usize) -> Result<Vec<u8>, usize> {
    let record = entry_record(entry);
    if record.len() > room {
        return Err(record.len());
    }
    Ok(record)
}

/// Writes one entry's record straight from borrowed parts, in field order, for the
/// bridges (no [`LogEntry`] in between): what `wire::RecordWriter` is on the GoSight
/// wire. The record is the one [`entry_record`] writes for the entry with these parts,
/// but for the order of its fields, which stay in the order given (a field written
/// twice is sent twice; [`super::from_request`] keeps the last, as the GoSight decoder
/// does): the attributes are the ones [`super::to_request`] maps those parts to
/// (`log.source`, `process.pid`, a field under its own key or escaped as
/// `field.<name>`). The body is written to a scratch buffer the caller keeps;
/// [`RecordWriter::finish`] copies it behind its prefix.
pub(crate) struct RecordWriter<'a> {
    body: &'a mut Vec<u8>,
    text: &'a mut String,
}

impl<'a> RecordWriter<'a> {
    /// Starts a record with its times (`observed_time_unix_nano` left for
    /// [`Frame::assemble`]), severity, body, source and pid (`category` stays empty).
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
        put_record_head(
            body,
            unix_nanos(Some(timestamp)),
            Observed::Later,
            level,
            message,
        );
        if !source.is_empty() {
            put_attr(body, RECORD_ATTRIBUTES, "", SOURCE, Value::Str(source));
        }
        if pid != 0 {
            put_attr(body, RECORD_ATTRIBUTES, "", PID, Value::Int(i64::from(pid)));
        }
        RecordWriter { body, text }
    }

    /// Adds a field (an attribute under its own key, or `field.<key>` where that is
    /// taken).
    pub(crate) fn field(&mut self, key: &str, value: &str) {
        let prefix = if field_taken(key) { FIELD_ESCAPE } else { "" };
        put_attr(self.body, RECORD_ATTRIBUTES, prefix, key, Value::Str(value));
    }

    /// Adds a field whose value is `value` formatted.
    pub(crate) fn field_fmt(&mut self, key: &str, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        self.text.clear();
        // Writing to a String fails only if the value's formatting does: keep what it
        // wrote.
        let _ = self.text.write_fmt(value);
        let prefix = if field_taken(key) { FIELD_ESCAPE } else { "" };
        put_attr(
            self.body,
            RECORD_ATTRIBUTES,
            prefix,
            key,
            Value::Str(self.text),
        );
    }

    /// The record: tag, length and body, in a buffer of exactly its size.
    pub(crate) fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(field_len(self.body.len()));
        put_len(&mut out, SCOPE_LOGS_RECORDS, self.body.len());
        out.extend_from_slice(self.body);
        out
    }
}

/// A template's bytes around its entries' records: its resource and the scope, and its
/// timestamp (else the time a batch is cut) to stamp the records with.
///
/// ```
/// use std::time::SystemTime;
/// use logsender::{otlp, Level, LogEntry, LogPayload};
///
/// let template = LogPayload::from_host("agent-1");
/// let entry = LogEntry::new(Level::Info, "hello");
/// let records = vec![otlp::entry_record(&entry)];
/// let now = SystemTime::now();
/// let bytes = otlp::Frame::of(&template).assemble(&records, now);
/// let mut payload = template.clone();
/// payload.timestamp = Some(now);
/// payload.logs.push(entry);
/// assert_eq!(bytes, otlp::encode_payload(&payload, usize::MAX)?);
/// # Ok::<(), logsender::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Frame {
    /// `ResourceLogs.resource`: tag, length, `Resource`.
    resource: Vec<u8>,
    /// `ScopeLogs.scope`: tag, length, `InstrumentationScope`.
    scope: Vec<u8>,
    stamp: Option<SystemTime>,
}

impl Frame {
    /// The frame of `template` (whose entries, if any, are left out).
    pub fn of(template: &LogPayload) -> Frame {
        let bare = LogPayload {
            agent_id: template.agent_id.clone(),
            host_id: template.host_id.clone(),
            hostname: template.hostname.clone(),
            endpoint_id: template.endpoint_id.clone(),
            timestamp: template.timestamp,
            logs: Vec::new(),
            meta: template.meta.clone(),
        };
        let mut bytes = Vec::new();
        let written = put_resource_logs(&bare, &mut bytes);
        Frame {
            resource: bytes[written.resource].to_vec(),
            scope: bytes[written.scope].to_vec(),
            stamp: template.timestamp,
        }
    }

    /// The most bytes the frame adds to records of fewer than 2³⁵ bytes in all (its
    /// two outer lengths at their longest): a batch's records may take a cap but this.
    pub fn overhead(&self) -> usize {
        2 * (1 + 5) + self.resource.len() + self.scope.len()
    }

    /// The request (one `ResourceLogs` record) carrying `records` (each one made by
    /// [`entry_record`]), stamped with the template's timestamp or else `now`, in a
    /// buffer of exactly its size. A record [`entry_record`] did not make is copied as
    /// it is.
    pub fn assemble(&self, records: &[Vec<u8>], now: SystemTime) -> Vec<u8> {
        let observed = unix_nanos(Some(self.stamp.unwrap_or(now)));
        let patches: Vec<Patch> = records.iter().map(Vec::as_slice).map(Patch::of).collect();
        let records_len = patches
            .iter()
            .zip(records)
            .fold(0usize, |n, (p, r)| n.saturating_add(p.len(r, observed)));
        let scope_logs = self.scope.len().saturating_add(records_len);
        let resource_logs = self.resource.len().saturating_add(field_len(scope_logs));
        let total = field_len(resource_logs);
        let mut out = Vec::with_capacity(total);
        put_len(&mut out, REQUEST_RESOURCE_LOGS, resource_logs);
        out.extend_from_slice(&self.resource);
        put_len(&mut out, RESOURCE_LOGS_SCOPE_LOGS, scope_logs);
        out.extend_from_slice(&self.scope);
        for (p, r) in patches.iter().zip(records) {
            p.put(r, observed, &mut out);
        }
        debug_assert_eq!(out.len(), total, "a record's length was miscounted");
        out
    }
}

/// Where a record's `observed_time_unix_nano` is: its body's offset and the field's.
#[derive(Clone, Copy)]
enum Patch {
    At {
        body: usize,
        field: usize,
    },
    /// Not a record of [`entry_record`]'s: copied as it is.
    None,
}

impl Patch {
    fn of(record: &[u8]) -> Patch {
        if field_end(record, 0, SCOPE_LOGS_RECORDS) != Some(record.len()) {
            return Patch::None;
        }
        let body = 1 + record[1..].iter().take_while(|b| **b & 0x80 != 0).count() + 1;
        let field = match record.get(body) {
            Some(&RECORD_TIME) => body + 9,
            _ => body,
        };
        let observed = record.get(field..field + 9);
        if observed.is_some_and(|f| f[0] == RECORD_OBSERVED && f[1..].iter().all(|b| *b == 0)) {
            Patch::At { body, field }
        } else {
            Patch::None
        }
    }

    /// The record's length once stamped.
    fn len(self, record: &[u8], observed: u64) -> usize {
        match self {
            Patch::At { body, .. } if observed == 0 => {
                let len = record.len() - body - 9;
                field_len(len)
            }
            _ => record.len(),
        }
    }

    fn put(self, record: &[u8], observed: u64, out: &mut Vec<u8>) {
        match self {
            Patch::At { field, .. } if observed != 0 => {
                let at = out.len() + field + 1;
                out.extend_from_slice(record);
                out[at..at + 8].copy_from_slice(&observed.to_le_bytes());
            }
            Patch::At { body, field } => {
                // 0 is not written (a proto3 default): the record without the field.
                put_len(out, SCOPE_LOGS_RECORDS, record.len() - body - 9);
                out.extend_from_slice(&record[body..field]);
                out.extend_from_slice(&record[field + 9..]);
            }
            Patch::None => out.extend_from_slice(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_bound_covers_its_lengths() {
        let frame = Frame::of(&LogPayload::from_host("a"));
        for records in [0, 127, 128, 16_384, 1 << 21, (1 << 28) + 5] {
            let scope_logs = frame.scope.len() + records;
            let exact = field_len(frame.resource.len() + field_len(scope_logs)) - records;
            assert!(exact <= frame.overhead(), "{records}");
        }
    }
}
