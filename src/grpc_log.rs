//! The gRPC core's own log records, forwarded to `log` under the target
//! `logsender::grpc` instead of the core's stderr printer.
//!
//! The core's severities sit below logsender's own lines, which already say once per
//! failed dial (at `warn`, with a hint) what the core repeats at length:
//!
//! | gRPC core | `log` |
//! |---|---|
//! | `ERROR` | `debug` |
//! | `INFO`, `DEBUG` | `trace` |
//!
//! The core's verbosity follows `log::max_level()` when a `LogSender` is created (it
//! overrides `GRPC_VERBOSITY`): `DEBUG` at `trace`, else `ERROR`. Without a logger, or
//! with logging off, the records are dropped: nothing ever goes to stderr.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use grpcio_sys::{
    gpr_log_func_args, gpr_log_severity, gpr_set_log_function, gpr_set_log_verbosity,
};
use log::{Level, LevelFilter, Record};

/// The target of every record from the gRPC core.
pub(crate) const TARGET: &str = "logsender::grpc";

/// Installs [`forward`] as the core's log function and sets the core's verbosity from
/// `log`'s current maximum level. Safe to call again (each `LogSender::new` does).
pub(crate) fn install() {
    let verbosity = if log::max_level() >= LevelFilter::Trace {
        gpr_log_severity::GPR_LOG_SEVERITY_DEBUG
    } else {
        gpr_log_severity::GPR_LOG_SEVERITY_ERROR
    };
    // SAFETY: both only store a value the core reads atomically; `forward` is a valid
    // log function for the life of the process.
    unsafe {
        gpr_set_log_verbosity(verbosity);
        gpr_set_log_function(Some(forward));
    }
}

/// The `log` level of a core severity (`gpr_log_severity` as a number, read as such so
/// an unexpected value cannot be an invalid enum).
fn level_of(severity: u32) -> Level {
    if severity == gpr_log_severity::GPR_LOG_SEVERITY_ERROR as u32 {
        Level::Debug
    } else {
        Level::Trace
    }
}

/// The core's log function: hands one record to the `log` logger. Never unwinds into C
/// (a panicking logger is caught here).
unsafe extern "C" fn forward(args: *mut gpr_log_func_args) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the core passes a valid record for the duration of the call.
        unsafe { forward_record(args) }
    }));
}

/// # Safety
///
/// `args` is null or points to a record whose strings are null or NUL-terminated, valid
/// for the duration of the call.
unsafe fn forward_record(args: *const gpr_log_func_args) {
    let Some(args) = args.as_ref() else {
        return;
    };
    let severity = std::ptr::addr_of!(args.severity).cast::<u32>().read();
    let level = level_of(severity);
    if level > log::max_level() {
        return;
    }
    let metadata = log::Metadata::builder().target(TARGET).level(level).build();
    if !log::logger().enabled(&metadata) {
        return;
    }
    let message = text(args.message).unwrap_or_default();
    let file = text(args.file);
    log::logger().log(
        &Record::builder()
            .metadata(metadata)
            .args(format_args!("{message}"))
            .module_path_static(Some(module_path!()))
            .file(file.as_deref())
            .line(u32::try_from(args.line).ok())
            .build(),
    );
}

/// A C string as text (invalid UTF-8 replaced); `None` for a null pointer.
///
/// # Safety
///
/// `s` is null or NUL-terminated and valid for the duration of the call.
unsafe fn text(s: *const c_char) -> Option<String> {
    if s.is_null() {
        None
    } else {
        Some(CStr::from_ptr(s).to_string_lossy().into_owned())
    }
}
