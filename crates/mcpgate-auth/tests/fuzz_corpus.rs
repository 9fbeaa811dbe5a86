//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same entry
//! points the fuzz targets use, on the stable toolchain: a regression the fuzzer once covered
//! fails here without nightly or cargo-fuzz. Crash reproducers found by fuzzing are kept in
//! `fuzz/regressions/<target>/`, replayed with the corpus, and named in `regressions` below.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use mcpgate_auth::fuzzing;

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

/// Crashes found by fuzzing, each kept as a test of the behaviour that was fixed.
mod regressions {
    use mcpgate_auth::fuzzing;
    use mcpgate_auth::server::register::validate_metadata;
    use serde_json::json;

    /// `fuzz/regressions/register/crash-mixed-redirect-kinds`: an https redirect beside a private-use
    /// one, with no `application_type`, was defaulted to `web` and registered, although `web` is
    /// refused with a private-use redirect; the echoed metadata did not validate again.
    #[test]
    fn mixed_redirect_kinds_default_to_native() {
        let request = json!({
            "redirect_uris": ["com.example.app:/cb", "https://app.example/cb"],
        });
        let registration = validate_metadata(&fuzzing::config(), &request, false).unwrap();
        assert_eq!(registration.metadata["application_type"], "native");
        let again = validate_metadata(
            &fuzzing::config(),
            &serde_json::Value::Object(registration.metadata.clone()),
            false,
        )
        .unwrap();
        assert_eq!(again, registration);
        // An explicit `web` is still refused.
        let web = json!({
            "redirect_uris": ["com.example.app:/cb", "https://app.example/cb"],
            "application_type": "web",
        });
        assert!(validate_metadata(&fuzzing::config(), &web, false).is_err());
        fuzzing::register(
            br#"{"redirect_uris": ["jsaavcript:alerddddddddddddddddddddddddddddddddddd", "https://app.evil.example/cb"]}"#,
        );
    }
}
