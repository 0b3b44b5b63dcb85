//! The one switch for the rows that ship **logsender** on the OTLP wire (throughput's
//! `otlp/4` and `otlp-gzip6/4`, bridges' `logsender-otlp`). The tonic peer's OTLP rows
//! do not depend on it and always run.
//!
//! To turn the rows on once `logsender::Wire` and `max_exports_in_flight` exist:
//! uncomment the two lines in [`otlp_wire`] and set [`OTLP_WIRE_READY`] to `true`
//! (checked against the API of main's a36f5db: the benches then compile
//! clippy-clean). Until then the rows are left out of every table (and a filter that
//! names them selects nothing). Flipping only the constant would ship GoSight to the
//! sink's OTLP service: the throughput parent warns that the sink counted no records,
//! and the bridges row's first line is never delivered.

use logsender::ConfigBuilder;

/// Whether logsender's OTLP rows run (see the module's documentation).
pub const OTLP_WIRE_READY: bool = false;

/// Export calls in flight: logsender's `max_exports_in_flight` (its default) and the
/// tonic peer's concurrent calls.
pub const EXPORTS_IN_FLIGHT: usize = 4;

/// `builder` switched to the OTLP wire with `EXPORTS_IN_FLIGHT` exports in flight.
pub fn otlp_wire(builder: ConfigBuilder) -> ConfigBuilder {
    builder
    // ---- OTLP WIRE: uncomment these two lines and set OTLP_WIRE_READY = true ----
    // .wire(logsender::Wire::OtlpLogs)
    // .max_exports_in_flight(EXPORTS_IN_FLIGHT)
}
