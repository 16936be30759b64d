//! See `lockstep::fuzzing::rest_bodies`: arbitrary bytes, no panic, its invariants hold.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep::fuzzing::rest_bodies(data));
