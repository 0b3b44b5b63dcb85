//! The bytes of each wire. A payload is encoded once, at intake, in the form its wire
//! sends (GoSight: one `LogPayload` message; OTLP: one or more `ResourceLogs` records of
//! an `ExportLogsServiceRequest`, which concatenate into a request), so that retries
//! cost no encoding and every byte bound counts real bytes; held bytes are decoded back
//! only to hand a payload to the user. An entry handle's payloads are built in that
//! form from the start ([`EntryFrame`]): intake takes them as they are.

use std::time::SystemTime;

use crate::config::Wire;
use crate::error::Error;
use crate::model::{LogEntry, LogPayload};
use crate::otlp;
use crate::wire;

impl Wire {
    /// `payload` as this wire holds it. On OTLP a payload whose request would pass
    /// `cap` is split into several `ResourceLogs` records of at most `cap` each, sent
    /// as consecutive calls; an entry alone over `cap` is [`Error::PayloadTooLarge`].
    pub(crate) fn encode(self, payload: &LogPayload, cap: usize) -> Result<Vec<u8>, Error> {
        match self {
            Wire::GoSightStream => Ok(wire::encode(payload)),
            Wire::OtlpLogs => otlp::encode_payload(payload, cap),
        }
    }

    /// Held bytes back as the payload they carry (the parts of a split payload joined).
    pub(crate) fn decode(self, bytes: &[u8]) -> Result<LogPayload, Error> {
        match self {
            Wire::GoSightStream => wire::decode(bytes),
            Wire::OtlpLogs => {
                let mut parts = otlp::decode(bytes)?.into_iter();
                let mut payload = parts.next().unwrap_or_default();
                for part in parts {
                    payload.logs.extend(part.logs);
                }
                Ok(payload)
            }
        }
    }

    /// [`Wire::decode`] for bytes logsender wrote itself (`what` they are, for the
    /// log): `None`, logged as an error, if they do not decode after all.
    pub(crate) fn decode_or_log(self, bytes: &[u8], what: &str) -> Option<LogPayload> {
        match self.decode(bytes) {
            Ok(p) => Some(p),
            Err(e) => {
                log::error!("cannot decode {what}: {e}");
                None
            }
        }
    }

    /// The entry level's frame of `template` on this wire.
    pub(crate) fn entry_frame(self, template: &LogPayload) -> EntryFrame {
        match self {
            Wire::GoSightStream => {
                // With the longest timestamp a batch can be stamped with (whatever the
                // clock says then), so that no batch encodes larger than this says.
                let stamp = match template.timestamp {
                    Some(_) => 0,
                    None => wire::MAX_TIMESTAMP_FIELD,
                };
                // (A template carries no entries: `Batching` checks.)
                let overhead = wire::encoded_len(template).saturating_add(stamp);
                EntryFrame::GoSight(wire::Frame::of(template), overhead)
            }
            Wire::OtlpLogs => EntryFrame::Otlp(otlp::Frame::of(template)),
        }
    }
}

/// A template's bytes around an entry handle's records, on the sender's wire: how the
/// batcher turns records (each entry encoded alone on its producer's thread) into the
/// bytes intake holds and the wire sends, one payload (on OTLP one `ResourceLogs`
/// record) per batch. Records are [`EntryFrame::record_within`]'s, or the bridges'
/// (written by `wire::RecordWriter` or `otlp::RecordWriter`, as [`EntryFrame::wire`]
/// says).
#[derive(Debug, Clone)]
pub(crate) enum EntryFrame {
    /// `wire::Frame`, and its size with the longest timestamp.
    GoSight(wire::Frame, usize),
    Otlp(otlp::Frame),
}

impl EntryFrame {
    /// The wire whose bytes it makes.
    pub(crate) fn wire(&self) -> Wire {
        match self {
            EntryFrame::GoSight(..) => Wire::GoSightStream,
            EntryFrame::Otlp(_) => Wire::OtlpLogs,
        }
    }

    /// The most bytes the frame adds to its records: a payload is at most this plus
    /// the lengths of its records.
    pub(crate) fn overhead(&self) -> usize {
        match self {
            EntryFrame::GoSight(_, overhead) => *overhead,
            EntryFrame::Otlp(frame) => frame.overhead(),
        }
    }

    /// `entry`'s record, unless it would be longer than `room` bytes: then its length.
    pub(crate) fn record_within(&self, entry: &LogEntry, room: usize) -> Result<Vec<u8>, usize> {
        match self {
            EntryFrame::GoSight(..) => wire::entry_record_within(entry, room),
            EntryFrame::Otlp(_) => otlp::entry_record_within(entry, room),
        }
    }

    /// The payload carrying `records`, stamped with the template's timestamp or `now`.
    pub(crate) fn assemble(&self, records: &[Vec<u8>], now: SystemTime) -> Vec<u8> {
        match self {
            EntryFrame::GoSight(frame, _) => frame.assemble(records, now),
            EntryFrame::Otlp(frame) => frame.assemble(records, now),
        }
    }
}

/// A payload the entry level assembled from encoded entries, in its wire's form (what
/// [`Wire::encode`] gives for it, under the OTLP request cap one record), and how many
/// entries it carries.
pub(crate) struct Encoded {
    pub(crate) wire: Wire,
    pub(crate) bytes: Vec<u8>,
    pub(crate) entries: u32,
}

impl Encoded {
    /// The payload back as a tree (to hand it back or report it); `None` (logged) only
    /// if the bytes do not parse, which would be a bug.
    pub(crate) fn decode(&self) -> Option<LogPayload> {
        self.wire
            .decode_or_log(&self.bytes, "an assembled payload (this is a bug)")
    }
}
