//! Generates rust-protobuf message code for `proto/*.proto` into `$OUT_DIR/proto`.
//!
//! Uses the pure-Rust parser, so no `protoc` is needed. The gRPC service in
//! `log.proto` is not generated here; its method tables are written by hand.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .inputs(["proto/log.proto", "proto/meta.proto"])
        .cargo_out_dir("proto")
        .run_from_script();
}
