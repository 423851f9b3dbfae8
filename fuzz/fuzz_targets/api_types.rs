//! The API types, read from JSON: accepted values re-serialise to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = defsync::fuzzing::api_types(data) {
        panic!("{broken}");
    }
});
