//! Replays every committed fuzz corpus file of this crate's targets (`fuzz/corpus/<target>/`)
//! through the same entry points the fuzz targets use, on the stable toolchain.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use mcpgate::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    let mut failed = Vec::new();
    for file in &files {
        // A fuzzer running at the same time may have just removed it.
        let Ok(data) = std::fs::read(file) else {
            continue;
        };
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: inputs that fail: {failed:#?}");
}

#[test]
fn mcp_post() {
    replay("mcp_post", fuzzing::mcp_post);
}

#[test]
fn config() {
    replay("config", fuzzing::config);
}
