//! Generates rust-protobuf message code with the pure-Rust parser, so no `protoc` is
//! needed:
//!
//! - GoSight's `proto/log.proto` and `proto/meta.proto` into `$OUT_DIR/proto`
//!   (`wire::pb`). The gRPC service in `log.proto` is not generated here; its method
//!   tables are written by hand.
//! - OTLP's logs protos (`proto/opentelemetry/`, release and commit in its README) into
//!   `$OUT_DIR/otlp` (`otlp::pb`), a module tree of their own.
//! - gRPC's `google.rpc.Status` and `RetryInfo` (`proto/google/`, source in its README)
//!   into `$OUT_DIR/rpc` (`export::rpc`, private). Their imports of
//!   `google/protobuf/any.proto` and `duration.proto` come from the parser's bundled
//!   copies, and the generator maps them to `protobuf::well_known_types`.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .inputs(["proto/log.proto", "proto/meta.proto"])
        .cargo_out_dir("proto")
        .run_from_script();
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .inputs([
            "proto/opentelemetry/proto/common/v1/common.proto",
            "proto/opentelemetry/proto/resource/v1/resource.proto",
            "proto/opentelemetry/proto/logs/v1/logs.proto",
            "proto/opentelemetry/proto/collector/logs/v1/logs_service.proto",
        ])
        .cargo_out_dir("otlp")
        .run_from_script();
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .inputs([
            "proto/google/rpc/status.proto",
            "proto/google/rpc/error_details.proto",
        ])
        .cargo_out_dir("rpc")
        .run_from_script();
}
