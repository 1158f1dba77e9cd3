//! `cargo xtask`: set-up, demo, tests (being written this session).
fn main() {}
