//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same entry
//! points the fuzz targets use, on the stable toolchain: a regression the fuzzer once covered
//! fails here without nightly or cargo-fuzz. Crash reproducers found by fuzzing are kept in the
//! corpus too, and named in `regressions` below.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use mcpgate_auth::fuzzing;

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
        let data = std::fs::read(file).unwrap();
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: inputs that fail: {failed:#?}");
}

#[test]
fn bearer_jwt() {
    replay("bearer_jwt", fuzzing::bearer_jwt);
}

#[test]
fn token_endpoint() {
    replay("token_endpoint", fuzzing::token_endpoint);
}

#[test]
fn authorize() {
    replay("authorize", fuzzing::authorize);
}

#[test]
fn register() {
    replay("register", fuzzing::register);
}

#[test]
fn cimd() {
    replay("cimd", fuzzing::cimd);
}
