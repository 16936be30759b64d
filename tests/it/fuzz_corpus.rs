//! The fuzz targets' corpora (`tests/fuzz/corpus/`, `protocol/fuzz/corpus/`
//! when present) replayed on stable, as CI does: every input that the
//! fuzzers kept must still pass its target's checks. Plus a short
//! deterministic run of random inputs per target, so that a checkout without
//! the nightly toolchain still exercises them.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("room_ops", lockstep::fuzzing::room_ops),
    ("json_dialect", lockstep::fuzzing::json_dialect),
    ("hello", lockstep::fuzzing::hello),
    ("rest_bodies", lockstep::fuzzing::rest_bodies),
];

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn every_corpus_input_passes_its_target() {
    for (name, target) in TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "tests/fuzz/corpus/{name} is empty");
        for (path, bytes) in inputs {
            let r = std::panic::catch_unwind(|| target(&bytes));
            assert!(r.is_ok(), "{path} fails its target {name}");
        }
    }
}

/// xorshift64*: the same inputs in every run.
fn random_inputs(seed: u64, n: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut s = seed;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..n).map(move |_| {
        let len = (next() % 300) as usize;
        (0..len).map(|_| next() as u8).collect()
    })
}

#[test]
fn random_inputs_pass_every_target() {
    for (i, (name, target)) in TARGETS.into_iter().enumerate() {
        for input in random_inputs(0x9e37_79b9_7f4a_7c15 ^ i as u64, 3_000) {
            let r = std::panic::catch_unwind(|| target(&input));
            assert!(r.is_ok(), "{name} fails on {}", input.iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
    }
}
