#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcpgate_auth::fuzzing::token_endpoint(data));
