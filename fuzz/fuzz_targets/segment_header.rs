//! A segment header and a seal payload (`Header::decode`, `Seal::decode`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recorder::fuzzing::segment_header(data));
