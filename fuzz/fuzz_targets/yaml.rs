//! The YAML reader: refused with a location, or accepted with a digest that survives render → parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = defsync::fuzzing::yaml(data) {
        panic!("{broken}");
    }
});
