//! See `lockstep::fuzzing::json_dialect`: arbitrary bytes, no panic, its invariants hold.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep::fuzzing::json_dialect(data));
