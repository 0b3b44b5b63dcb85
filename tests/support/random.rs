//! Random GoSight payloads for the tests that check the model against a wire format
//! (`wire_equivalence.rs`, `otlp_mapping.rs`), built through protobuf *reflection*:
//! every field the descriptors of `LogPayload`, `LogEntry`, `LogMeta`, `Meta` and
//! `Timestamp` declare is filled (or left empty, at random), so a field added to the
//! protos is covered without touching the tests. Include it with
//! `#[path = "support/random.rs"] mod random;` (it is not part of `support/mod.rs`,
//! whose sinks these tests do not need).
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use logsender::LogPayload;

use logsender::wire::pb;
use protobuf::reflect::{MessageDescriptor, ReflectValueBox, RuntimeFieldType, RuntimeType};
use protobuf::{MessageDyn, MessageFull};

#[path = "../../benches/common/rng.rs"]
mod rng;

pub use rng::Rng;

impl Rng {
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    /// Empty, short ASCII, unicode, or long strings.
    pub fn string(&mut self) -> String {
        const PIECES: [&str; 8] = ["a", "é", "日本", "🦀", " ", "\n", "\0", "GET /x 200"];
        let len = match self.below(10) {
            0 | 1 => 0,
            2..=7 => self.below(12),
            8 => self.below(300),
            _ => self.below(3_000),
        };
        (0..len)
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }

    /// Zero, small, negative, and extreme numbers.
    pub fn number(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => self.below(128),
            2 => self.below(1 << 20),
            3 => u64::MAX - self.below(4),
            4 => (self.below(1 << 31)).wrapping_neg(),
            _ => self.next(),
        }
    }
}

/// Whether `descriptor` is `google.protobuf.Timestamp`.
fn is_timestamp(descriptor: &MessageDescriptor) -> bool {
    descriptor.full_name() == "google.protobuf.Timestamp"
}

/// A valid timestamp (the model holds it as a `SystemTime`): before and after 1970,
/// with and without nanoseconds.
fn timestamp(rng: &mut Rng) -> Box<dyn MessageDyn> {
    let t = protobuf::well_known_types::timestamp::Timestamp {
        seconds: match rng.below(4) {
            0 => 0,
            1 => -(rng.below(3_000_000_000) as i64),
            2 => rng.below(4_000_000_000) as i64,
            _ => 1_700_000_000 + rng.below(100_000_000) as i64,
        },
        nanos: if rng.chance(3) {
            0
        } else {
            rng.below(1_000_000_000) as i32
        },
        ..Default::default()
    };
    Box::new(t)
}

fn value(rng: &mut Rng, ty: &RuntimeType, depth: u32) -> ReflectValueBox {
    match ty {
        RuntimeType::I32 => ReflectValueBox::I32(rng.number() as i32),
        RuntimeType::I64 => ReflectValueBox::I64(rng.number() as i64),
        RuntimeType::U32 => ReflectValueBox::U32(rng.number() as u32),
        RuntimeType::U64 => ReflectValueBox::U64(rng.number()),
        RuntimeType::F32 => ReflectValueBox::F32(rng.number() as f32),
        RuntimeType::F64 => ReflectValueBox::F64(rng.number() as f64),
        RuntimeType::Bool => ReflectValueBox::Bool(rng.chance(2)),
        RuntimeType::String => ReflectValueBox::String(rng.string()),
        RuntimeType::VecU8 => ReflectValueBox::Bytes(rng.string().into_bytes()),
        RuntimeType::Enum(e) => {
            let values: Vec<i32> = e.values().map(|v| v.value()).collect();
            ReflectValueBox::Enum(e.clone(), values[rng.below(values.len() as u64) as usize])
        }
        RuntimeType::Message(m) if is_timestamp(m) => ReflectValueBox::Message(timestamp(rng)),
        RuntimeType::Message(m) => ReflectValueBox::Message(message(rng, m, depth + 1)),
    }
}

/// A message with every field of `descriptor` set or left empty at random. `maps_small`
/// keeps every map to at most one entry (for the byte comparison).
fn message(rng: &mut Rng, descriptor: &MessageDescriptor, depth: u32) -> Box<dyn MessageDyn> {
    let mut m = descriptor.new_instance();
    let maps_small = MAPS_SMALL.with(|s| s.get());
    for field in descriptor.fields() {
        if rng.chance(5) {
            continue; // left at its default
        }
        match field.runtime_field_type() {
            RuntimeFieldType::Singular(ty) => {
                let v = value(rng, &ty, depth);
                field.set_singular_field(&mut *m, v);
            }
            RuntimeFieldType::Repeated(ty) => {
                // Entries: a few, and sometimes many.
                let n = if depth == 0 && rng.chance(20) {
                    rng.below(400)
                } else {
                    rng.below(6)
                };
                let mut repeated = field.mut_repeated(&mut *m);
                for _ in 0..n {
                    repeated.push(value(rng, &ty, depth));
                }
            }
            RuntimeFieldType::Map(k, v) => {
                let n = if maps_small {
                    rng.below(2)
                } else {
                    rng.below(6)
                };
                let mut map = field.mut_map(&mut *m);
                for _ in 0..n {
                    let key = value(rng, &k, depth);
                    let val = value(rng, &v, depth);
                    map.insert(key, val);
                }
            }
        }
    }
    m
}

thread_local! {
    static MAPS_SMALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub fn random_payload(rng: &mut Rng, maps_small: bool) -> pb::log::LogPayload {
    MAPS_SMALL.with(|s| s.set(maps_small));
    let m = message(rng, &pb::log::LogPayload::descriptor(), 0);
    *m.downcast_box::<pb::log::LogPayload>()
        .expect("a LogPayload instance")
}

/// Number of messages of each type in `msg` with at least one non-default field: proof
/// that the generator reaches every message type.
pub fn reached(msg: &pb::log::LogPayload, seen: &mut HashMap<&'static str, usize>) {
    let mut bump = |k: &'static str, set: bool| *seen.entry(k).or_default() += usize::from(set);
    bump("payload.timestamp", msg.timestamp.is_some());
    bump("payload.meta", msg.meta.is_some());
    for e in &msg.logs {
        bump("entry", true);
        bump("entry.timestamp", e.timestamp.is_some());
        bump("entry.meta", e.meta.is_some());
        bump("entry.fields", !e.fields.is_empty());
    }
}

/// What a timestamp comes back as over OTLP: nanoseconds after the epoch, 0 meaning
/// unknown.
pub fn representable(t: Option<SystemTime>) -> Option<SystemTime> {
    t.filter(|t| {
        t.duration_since(UNIX_EPOCH)
            .is_ok_and(|d| !d.is_zero() && d.as_nanos() <= u128::from(u64::MAX))
    })
}

/// `p` as it comes back from OTLP (the exceptions OTLP.md states: timestamps OTLP
/// cannot hold, and the timestamp of a payload with no entries).
pub fn expected_back(p: &LogPayload) -> LogPayload {
    let mut p = p.clone();
    p.timestamp = if p.logs.is_empty() {
        None
    } else {
        representable(p.timestamp)
    };
    for e in &mut p.logs {
        e.timestamp = representable(e.timestamp);
    }
    p
}
