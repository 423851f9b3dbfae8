//! The server's strict JSON parser: accepted values re-serialise to the same canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = defsync::fuzzing::strict_json(data) {
        panic!("{broken}");
    }
});
