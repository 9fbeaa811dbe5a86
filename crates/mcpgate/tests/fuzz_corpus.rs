//! Replays every committed fuzz corpus file of this crate's targets (`fuzz/corpus/<target>/`)
//! through the same entry points the fuzz targets use, on the stable toolchain.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use mcpgate::fuzzing;

/// The files of `fuzz/corpus/<target>/` (minimised by cmin) and `fuzz/regressions/<target>/`
/// (crash reproducers, kept whatever cmin decides).
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .filter_map(|kind| std::fs::read_dir(fuzz.join(kind).join(target)).ok())
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for {target}");
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
