//! See `lockstep::fuzzing::room_ops`: arbitrary bytes, no panic, its invariants hold.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lockstep::fuzzing::room_ops(data));
