//! The bytes of each wire. A payload is encoded once, at intake, in the form its wire
//! sends (GoSight: one `LogPayload` message; OTLP: one or more `ResourceLogs` records of
//! an `ExportLogsServiceRequest`, which concatenate into a request), so that retries
//! cost no encoding and every byte bound counts real bytes; held bytes are decoded back
//! only to hand a payload to the user.

use crate::config::Wire;
use crate::error::Error;
use crate::model::LogPayload;
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

    /// An entry handle's payload (GoSight bytes, from `wire::Frame`) in this wire's
    /// form; on failure, the error and the bytes given back.
    pub(crate) fn adopt(self, bytes: Vec<u8>, cap: usize) -> Result<Vec<u8>, (Error, Vec<u8>)> {
        match self {
            Wire::GoSightStream => Ok(bytes),
            Wire::OtlpLogs => match wire::decode(&bytes).and_then(|p| self.encode(&p, cap)) {
                Ok(adopted) => Ok(adopted),
                Err(e) => Err((e, bytes)),
            },
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
}
