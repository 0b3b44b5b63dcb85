//! The OTLP side of the bench sinks (throughput and bridges): a grpcio unary handler for
//! `/opentelemetry.proto.collector.logs.v1.LogsService/Export` that counts what each
//! request carries and answers OK with an empty `ExportLogsServiceResponse`.
//!
//! Counting, without decoding: one **payload** per `ResourceLogs` (field 1 of the
//! request: logsender ships each `LogPayload` as one), one **record** per `LogRecord`
//! (field 2 of each `ScopeLogs`, field 2 of each `ResourceLogs`). The walk reads only
//! tags and lengths and skips everything else, straight from grpc core's slices (no
//! copy), so the sink costs about what the GoSight handler costs; the bridges sink
//! checks it against a full prost decode of its sampled messages.
//!
//! Included with `#[path]` by both benches; uses their `sink` and `protocol` modules.

use std::io::BufRead;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use grpcio::{GrpcSlice, Marshaller, MessageReader, Method, MethodType, RpcContext, UnarySink};

use crate::protocol::{de_vec, ser_vec};
use crate::sink::SinkCounts;

/// OTLP's logs `Export` method (logsender's `otlp::EXPORT_PATH`).
pub const OTLP_PATH: &str = logsender::otlp::EXPORT_PATH;

/// An `ExportLogsServiceRequest` as the sink counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Export {
    /// The request's encoded bytes (after grpc core inflated it).
    pub bytes: u64,
    /// `ResourceLogs` in it: logsender's payloads.
    pub payloads: u64,
    /// `LogRecord`s in it, over all its `ResourceLogs` and `ScopeLogs`.
    pub records: u64,
}

/// The method with request deserializer `de` (the counting `de_export`, or a bench's
/// own that wraps `count_export`).
pub const fn export_method(
    de: fn(MessageReader) -> grpcio::Result<Export>,
) -> Method<Export, Vec<u8>> {
    Method {
        ty: MethodType::Unary,
        name: OTLP_PATH,
        req_mar: Marshaller {
            ser: never_serialized,
            de,
        },
        resp_mar: Marshaller {
            ser: ser_vec,
            de: de_vec,
        },
    }
}

/// The counting method: requests are walked in place, never decoded.
pub const OTLP_METHOD: Method<Export, Vec<u8>> = export_method(de_export);

/// Requests are never serialized by a server.
fn never_serialized(_: &Export, _: &mut GrpcSlice) -> grpcio::Result<()> {
    Ok(())
}

fn not_a_request() -> grpcio::Error {
    grpcio::Error::Codec("not an ExportLogsServiceRequest".into())
}

/// Counts a request straight from grpc core's buffer.
pub fn de_export(mut reader: MessageReader) -> grpcio::Result<Export> {
    let bytes = reader.len();
    count_export(&mut reader, bytes).ok_or_else(not_a_request)
}

/// Counts the request of `len` bytes that `input` holds (`None` if it is not protobuf
/// of the request's shape).
pub fn count_export(input: &mut impl BufRead, len: usize) -> Option<Export> {
    let mut w = Walk(input);
    let (mut payloads, mut records) = (0, 0);
    w.fields(len, |w, field, wire, len| {
        if field == 1 && wire == 2 {
            payloads += 1;
            // ResourceLogs: field 2 is a ScopeLogs, whose field 2 is a LogRecord.
            w.fields(len, |w, field, wire, len| {
                if field == 2 && wire == 2 {
                    w.fields(len, |w, field, wire, len| {
                        if field == 2 && wire == 2 {
                            records += 1;
                        }
                        w.skip(len)
                    })
                } else {
                    w.skip(len)
                }
            })
        } else {
            w.skip(len)
        }
    })?;
    Some(Export {
        bytes: len as u64,
        payloads,
        records,
    })
}

/// A forward-only protobuf walker over a `BufRead` (varints may straddle its slices).
struct Walk<'a, R: BufRead>(&'a mut R);

impl<R: BufRead> Walk<'_, R> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.0.fill_buf().ok()?.first()?;
        self.0.consume(1);
        Some(b)
    }

    /// A varint and how many bytes it took.
    fn varint(&mut self) -> Option<(u64, usize)> {
        let mut v = 0u64;
        for (i, shift) in (0..64).step_by(7).enumerate() {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some((v, i + 1));
            }
        }
        None
    }

    fn skip(&mut self, mut n: usize) -> Option<()> {
        while n > 0 {
            let available = self.0.fill_buf().ok()?.len();
            if available == 0 {
                return None;
            }
            let k = available.min(n);
            self.0.consume(k);
            n -= k;
        }
        Some(())
    }

    /// Walks the `len` bytes of one message: varints are read and passed over; for
    /// every other field `on` gets its number, wire type and value length and must
    /// consume the value (`skip` it, or walk it with `fields`).
    fn fields(
        &mut self,
        len: usize,
        mut on: impl FnMut(&mut Self, u64, u64, usize) -> Option<()>,
    ) -> Option<()> {
        let mut left = len;
        while left > 0 {
            let (tag, n) = self.varint()?;
            left = left.checked_sub(n)?;
            let value = match tag & 7 {
                0 => {
                    let (_, n) = self.varint()?;
                    left = left.checked_sub(n)?;
                    continue;
                }
                1 => 8,
                2 => {
                    let (v, n) = self.varint()?;
                    left = left.checked_sub(n)?;
                    usize::try_from(v).ok()?
                }
                5 => 4,
                _ => return None,
            };
            left = left.checked_sub(value)?;
            on(self, tag >> 3, tag & 7, value)?;
        }
        Some(())
    }
}

/// The `Export` handler on `method`: count the request's payloads, bytes and records,
/// answer an empty `ExportLogsServiceResponse` (counted as an OK answer).
pub fn otlp_service(counts: &Arc<SinkCounts>, method: &Method<Export, Vec<u8>>) -> grpcio::Service {
    let counts = counts.clone();
    grpcio::ServiceBuilder::new()
        .add_unary_handler(
            method,
            move |ctx: RpcContext<'_>, request: Export, sink: UnarySink<Vec<u8>>| {
                counts.messages.fetch_add(request.payloads, Relaxed);
                counts.bytes.fetch_add(request.bytes, Relaxed);
                counts.records.fetch_add(request.records, Relaxed);
                let counts = counts.clone();
                ctx.spawn(async move {
                    if sink.success(Vec::new()).await.is_ok() {
                        counts.ok_streams.fetch_add(1, Relaxed);
                    }
                });
            },
        )
        .build()
}
