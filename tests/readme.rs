//! The README's hello world is `examples/hello.rs` (which `cargo test` builds), word
//! for word, and stays under 15 lines; its `log` bridge block is
//! `examples/log_bridge.rs`, and its `tracing` block `examples/tracing_layer.rs`, word for
//! word.

#[test]
fn the_readme_hello_world_is_the_example_that_compiles() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let example = std::fs::read_to_string(root.join("examples/hello.rs")).expect("hello.rs");
    let usage = readme.split("## Usage").nth(1).expect("a Usage section");
    let block = usage
        .split("```rust,no_run\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a rust block");
    assert_eq!(block, example, "README and examples/hello.rs differ");
    assert!(example.lines().count() < 15, "the hello world grew");
    assert!(
        example.contains("LogEntry::new"),
        "entries are timestamped by LogEntry::new"
    );
}

#[test]
fn the_readme_log_bridge_is_the_example_that_compiles() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let example =
        std::fs::read_to_string(root.join("examples/log_bridge.rs")).expect("log_bridge.rs");
    let section = readme
        .split("**Your program's `log` lines**")
        .nth(1)
        .expect("the bridge's section");
    let block = section
        .split("```rust,no_run\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a rust block");
    assert_eq!(block, example, "README and examples/log_bridge.rs differ");
}

#[test]
fn the_readme_tracing_layer_is_the_example_that_compiles() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let example =
        std::fs::read_to_string(root.join("examples/tracing_layer.rs")).expect("tracing_layer.rs");
    let section = readme
        .split("**Your program's `tracing` events**")
        .nth(1)
        .expect("the layer's section");
    let block = section
        .split("```rust,no_run\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a rust block");
    assert_eq!(
        block, example,
        "README and examples/tracing_layer.rs differ"
    );
}
