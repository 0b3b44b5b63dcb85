//! The README's hello world is `examples/hello.rs` (which `cargo test` builds), word
//! for word, and stays under 15 lines; its `log` bridge block is
//! `examples/log_bridge.rs`, and its `tracing` block `examples/tracing_layer.rs`, word for
//! word.

use std::path::Path;

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The first Rust block of the README after `heading`, and the example it must equal.
fn block_after(heading: &str, example: &str) -> (String, String) {
    let readme = read("README.md");
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("no README section {heading:?}"));
    let block = section
        .split("```rust,no_run\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("no rust block after {heading:?}"));
    (block.to_owned(), read(example))
}

#[test]
fn the_readme_hello_world_is_the_example_that_compiles() {
    let (block, example) = block_after("## Usage", "examples/hello.rs");
    assert_eq!(block, example, "README and examples/hello.rs differ");
    assert!(example.lines().count() < 15, "the hello world grew");
    assert!(
        example.contains("LogEntry::new"),
        "entries are timestamped by LogEntry::new"
    );
}

#[test]
fn the_readme_log_bridge_is_the_example_that_compiles() {
    let (block, example) = block_after("**Your program's `log` lines**", "examples/log_bridge.rs");
    assert_eq!(block, example, "README and examples/log_bridge.rs differ");
}

#[test]
fn the_readme_tracing_layer_is_the_example_that_compiles() {
    let (block, example) = block_after(
        "**Your program's `tracing` events**",
        "examples/tracing_layer.rs",
    );
    assert_eq!(
        block, example,
        "README and examples/tracing_layer.rs differ"
    );
}
