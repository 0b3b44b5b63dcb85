//! The one error type of the crate, and how gRPC status codes are classified.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

pub use grpcio::{RpcStatus, RpcStatusCode};

/// Everything that can go wrong in logsender.
///
/// Errors that carry a gRPC status keep it as their [`source`](std::error::Error::source),
/// so a caller can walk the chain down to the collector's own words.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value makes no sense (zero workers, a zero limit, ...).
    InvalidConfig {
        /// The setting that was rejected.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The collector address cannot be parsed as `host:port` (or a gRPC URI).
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS file is missing, unreadable or not PEM.
    Tls {
        /// The file that was read.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The encoded payload is larger than the configured maximum message size.
    /// It was not sent; the caller still owns it.
    PayloadTooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// No stream to the collector is up right now. Nothing was sent; try again later.
    Unavailable,
    /// Another thread's write held the stream for longer than `send_timeout` (the
    /// collector is slow or stalled). Nothing was sent; try again later.
    Timeout {
        /// How long the call waited.
        waited: std::time::Duration,
    },
    /// [`LogSender::wait_connected`](crate::LogSender::wait_connected) gave up: no
    /// stream came up in time.
    NotConnected {
        /// How long it waited.
        waited: std::time::Duration,
        /// The last connection error, if there was one (it names the cause).
        last_error: Option<LastError>,
    },
    /// The sender's buffers are at their configured bound.
    BufferFull {
        /// Payloads held (unacknowledged plus waiting to be written).
        payloads: usize,
        /// Encoded bytes held.
        bytes: usize,
    },
    /// The collector ended the call with an error status, or the write failed.
    Rpc(grpcio::Error),
    /// Bytes that do not decode as a `LogPayload`.
    Decode(protobuf::Error),
    /// The sender is closed (or closing) and takes no more work.
    Closed,
    /// An OS thread could not be spawned.
    Spawn(std::io::Error),
    /// [`LogBridge::install`](crate::LogBridge::install): the program has a `log`
    /// logger already (a process has one).
    LoggerInstalled,
    /// Another sender, in this process or another, uses this spool directory (its
    /// `LOCK` file is locked; the OS lets go of it when that process dies).
    SpoolLocked {
        /// The lock file.
        path: PathBuf,
    },
    /// The spool directory cannot be created, opened or read.
    Spool {
        /// The file or directory the operation failed on.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl Error {
    /// The gRPC status behind this error, if it came from the collector or the transport.
    pub fn status(&self) -> Option<&RpcStatus> {
        match self {
            Error::Rpc(grpcio::Error::RpcFailure(s)) => Some(s),
            Error::Rpc(grpcio::Error::RpcFinished(Some(s))) => Some(s),
            _ => None,
        }
    }

    /// Whether trying the same thing again later can succeed.
    ///
    /// Follows the OpenTelemetry exporter convention, see [`classify`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable
            | Error::Timeout { .. }
            | Error::BufferFull { .. }
            | Error::NotConnected { .. } => true,
            Error::Rpc(_) => match self.status() {
                Some(s) => classify(s.code()) != Retry::Never,
                None => true,
            },
            _ => false,
        }
    }
}

/// `Err(Error::InvalidConfig)` for the setting `field`, saying why.
pub(crate) fn invalid_config<T>(field: &'static str, reason: &str) -> Result<T, Error> {
    Err(Error::InvalidConfig {
        field,
        reason: reason.to_string(),
    })
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { field, reason } => {
                write!(f, "invalid configuration `{field}`: {reason}")
            }
            Error::InvalidAddress { addr, reason } => {
                write!(f, "invalid collector address {addr:?}: {reason}")
            }
            Error::Tls { path, reason } => {
                write!(f, "TLS file {}: {reason}", path.display())
            }
            Error::PayloadTooLarge { size, limit } => write!(
                f,
                "payload of {size} bytes exceeds the maximum message size of {limit} bytes"
            ),
            Error::Unavailable => f.write_str("no stream to the collector is up"),
            Error::Timeout { waited } => write!(
                f,
                "the stream stayed busy for {waited:?} (the collector is slow or stalled)"
            ),
            Error::NotConnected { waited, last_error } => {
                write!(f, "not connected to the collector after {waited:?}")?;
                match last_error {
                    Some(e) => write!(f, ": {e}"),
                    None => Ok(()),
                }
            }
            Error::BufferFull { payloads, bytes } => write!(
                f,
                "sender buffer is full ({payloads} payloads, {bytes} bytes held)"
            ),
            Error::Rpc(e) => match self.status() {
                Some(s) if s.message().is_empty() => {
                    write!(f, "collector call failed: {:?}", s.code())
                }
                Some(s) => write!(f, "collector call failed: {:?}: {}", s.code(), s.message()),
                None => write!(f, "collector call failed: {e}"),
            },
            Error::Decode(e) => write!(f, "cannot decode LogPayload: {e}"),
            Error::Closed => f.write_str("the sender is closed"),
            Error::Spawn(e) => write!(f, "cannot spawn a thread: {e}"),
            Error::LoggerInstalled => f.write_str("a `log` logger is installed already"),
            Error::SpoolLocked { path } => write!(
                f,
                "the spool is in use by another sender ({} is locked)",
                path.display()
            ),
            Error::Spool { path, error } => write!(f, "spool: {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Rpc(e) => Some(e),
            Error::Decode(e) => Some(e),
            Error::Spawn(e) => Some(e),
            Error::Spool { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<grpcio::Error> for Error {
    fn from(e: grpcio::Error) -> Self {
        Error::Rpc(e)
    }
}

impl From<protobuf::Error> for Error {
    fn from(e: protobuf::Error) -> Self {
        Error::Decode(e)
    }
}

/// Why a dial failed, as far as the gRPC core's message tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DialCause {
    /// Nothing listens at the address (TCP connection refused).
    Refused,
    /// The TLS handshake failed: a plaintext collector reached with TLS, an unknown
    /// certificate authority, a name mismatch, a missing client certificate.
    Tls,
    /// The host name does not resolve.
    NameResolution,
    /// No connection within `connect_timeout` (a firewall dropping packets, a peer that
    /// accepts TCP but never answers HTTP/2).
    Timeout,
    /// The connection came up but the stream could not be opened.
    StreamRefused,
    /// Anything else; the message says what.
    Other,
}

impl DialCause {
    /// Reads the cause out of a failed dial's message.
    pub(crate) fn of(message: &str) -> DialCause {
        let m = message.to_ascii_lowercase();
        let any = |words: &[&str]| words.iter().any(|w| m.contains(w));
        if any(&["ssl", "tls", "handshake", "certificate"]) {
            DialCause::Tls
        } else if any(&["connection refused"]) {
            DialCause::Refused
        } else if any(&[
            "dns resolution",
            "name resolution",
            "domain name not found",
            "resolve",
        ]) {
            DialCause::NameResolution
        } else if any(&["within", "timed out", "timeout", "deadline"]) {
            DialCause::Timeout
        } else {
            DialCause::Other
        }
    }

    /// The likely fix for a dial to `addr` that failed for this cause with `message`,
    /// where the cause and the gRPC core's words point to one.
    pub(crate) fn hint(self, message: &str, addr: &str) -> Option<String> {
        let m = message.to_ascii_lowercase();
        let any = |words: &[&str]| words.iter().any(|w| m.contains(w));
        let hint = match self {
            // A plaintext HTTP/2 answer read as a TLS record (OpenSSL, BoringSSL).
            DialCause::Tls
                if any(&[
                    "wrong version number",
                    "wrong_version_number",
                    "packet length",
                ]) =>
            {
                "the collector may be plaintext: use `.plaintext()`".to_string()
            }
            // The core's own check: "Peer name NAME is not in peer certificate".
            DialCause::Tls if any(&["not in peer certificate"]) => {
                "set `tls_server_name` to a name in the collector's certificate".to_string()
            }
            DialCause::Tls if any(&["certificate verify failed", "certificate_verify_failed"]) => {
                "give the collector's CA with `tls_ca_file`".to_string()
            }
            DialCause::Refused => format!("nothing listens on {addr}: is the collector running?"),
            DialCause::NameResolution => format!("the host name in {addr} does not resolve"),
            DialCause::Timeout => format!(
                "{addr} did not complete a gRPC connection within `connect_timeout`: is it \
                 the collector's port, or does a firewall drop the packets?"
            ),
            _ => return None,
        };
        Some(hint)
    }
}

/// The likely fix when the collector at `addr` refuses every call, an empty one too,
/// with `code`, on the OTLP wire (`otlp`) or GoSight's.
pub(crate) fn refusal_hint(code: RpcStatusCode, addr: &str, otlp: bool) -> Option<String> {
    let hint = match code {
        RpcStatusCode::UNAUTHENTICATED => {
            "the collector does not accept this client's credentials: renew them (an \
             expired token, client certificate or key)"
                .to_string()
        }
        RpcStatusCode::PERMISSION_DENIED => {
            "the collector does not let this client submit logs: check its ACL, or the \
             rights of the client's token or certificate"
                .to_string()
        }
        RpcStatusCode::UNIMPLEMENTED if otlp => format!(
            "{addr} does not serve OTLP's LogsService/Export: is it the collector's OTLP \
             gRPC port (4317 by default)? A GoSight server older than its OTLP receiver \
             takes only GoSight's stream (Wire::GoSightStream)"
        ),
        RpcStatusCode::UNIMPLEMENTED => format!(
            "{addr} does not serve proto.LogService/SubmitStream: is it the collector's \
             gRPC port, and does the collector take GoSight's stream? Current GoSight \
             servers and OpenTelemetry collectors take OTLP (Wire::OtlpLogs)"
        ),
        _ => return None,
    };
    Some(hint)
}

/// A message followed by its hint, if any: `message (hint: ...)`.
pub(crate) struct Hinted<'a> {
    /// What went wrong.
    pub(crate) message: &'a str,
    /// The likely fix.
    pub(crate) hint: Option<&'a str>,
}

impl fmt::Display for Hinted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)?;
        match self.hint {
            Some(hint) => write!(f, " (hint: {hint})"),
            None => Ok(()),
        }
    }
}

/// The most recent error of the connection, in [`Stats::last_error`](crate::Stats::last_error).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LastError {
    /// What went wrong, in the gRPC core's words where it has them.
    pub message: String,
    /// When.
    pub at: SystemTime,
    /// Why, if it was a failed dial.
    pub cause: Option<DialCause>,
    /// The likely fix, where the cause points to one, e.g. "nothing listens on ADDR: is
    /// the collector running?". [`Display`](fmt::Display) shows it after the message.
    pub hint: Option<String>,
    /// When a stream came up after it: `Some` means the error is history.
    pub recovered_at: Option<SystemTime>,
}

impl fmt::Display for LastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hinted = Hinted {
            message: &self.message,
            hint: self.hint.as_deref(),
        };
        write!(f, "{hinted}")?;
        if self.recovered_at.is_some() {
            f.write_str(" (recovered since)")?;
        }
        Ok(())
    }
}

/// How a gRPC status code is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retry with the normal backoff.
    Backoff,
    /// Retry, but wait longer than the normal backoff (the collector is overloaded).
    Slowly,
    /// Permanent: retrying cannot help; the payloads go to the dead-letter handler
    /// (unless the collector refuses every call and they are held: see
    /// [`ConfigBuilder::hold_when_refused`](crate::ConfigBuilder::hold_when_refused)).
    Never,
}

/// Classifies a status code, following the OpenTelemetry exporter convention.
///
/// `UNAVAILABLE`, `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`,
/// `DATA_LOSS` are retried with backoff; `RESOURCE_EXHAUSTED` is retried with a longer
/// delay. `INTERNAL` and `UNKNOWN` are retried too (unlike OpenTelemetry): they are what
/// a proxy that resets a stream or a gateway answering HTTP 500 produce, which passes.
/// A payload that *itself* keeps causing them is isolated and dead-lettered after a few
/// attempts alone, so retrying them can never loop for ever. Everything else
/// (`INVALID_ARGUMENT`, `UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNIMPLEMENTED`, ...) is
/// permanent. `OK` is listed as retryable only because a call that ends `OK` before it
/// was half-closed proves nothing.
///
/// ```
/// use logsender::{classify, Retry, RpcStatusCode};
/// assert_eq!(classify(RpcStatusCode::UNAVAILABLE), Retry::Backoff);
/// assert_eq!(classify(RpcStatusCode::INTERNAL), Retry::Backoff);
/// assert_eq!(classify(RpcStatusCode::RESOURCE_EXHAUSTED), Retry::Slowly);
/// assert_eq!(classify(RpcStatusCode::PERMISSION_DENIED), Retry::Never);
/// ```
pub fn classify(code: RpcStatusCode) -> Retry {
    match code {
        RpcStatusCode::UNAVAILABLE
        | RpcStatusCode::CANCELLED
        | RpcStatusCode::DEADLINE_EXCEEDED
        | RpcStatusCode::ABORTED
        | RpcStatusCode::OUT_OF_RANGE
        | RpcStatusCode::DATA_LOSS
        | RpcStatusCode::INTERNAL
        | RpcStatusCode::UNKNOWN
        | RpcStatusCode::OK => Retry::Backoff,
        RpcStatusCode::RESOURCE_EXHAUSTED => Retry::Slowly,
        _ => Retry::Never,
    }
}
