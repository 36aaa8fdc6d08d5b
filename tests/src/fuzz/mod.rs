//! The dataplane fuzzer (issue 25, "Isolation holds under attack"): structure-aware frames
//! (generate.rs, seeded by rng.rs) run through the loaded programs with BPF_PROG_TEST_RUN
//! (run.rs), each answer held against a reference model of what the programs must do
//! (model.rs). `cargo xtask fuzz` runs ten million; `tests/tests/fuzz.rs` a fixed-seed
//! hundred thousand.
pub mod generate;
pub mod model;
pub mod rng;
pub mod run;
