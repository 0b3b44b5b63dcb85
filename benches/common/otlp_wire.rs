//! The settings of the rows that ship **logsender** on the OTLP wire (throughput's
//! `otlp/4` and `otlp-gzip6/4`, bridges' `logsender-otlp`), in one place.

use logsender::ConfigBuilder;

/// Export calls in flight: logsender's `max_exports_in_flight` (its default) and the
/// tonic peer's concurrent calls.
pub const EXPORTS_IN_FLIGHT: usize = 4;

/// `builder` switched to the OTLP wire with `EXPORTS_IN_FLIGHT` exports in flight.
pub fn otlp_wire(builder: ConfigBuilder) -> ConfigBuilder {
    builder
        .wire(logsender::Wire::OtlpLogs)
        .max_exports_in_flight(EXPORTS_IN_FLIGHT)
}
