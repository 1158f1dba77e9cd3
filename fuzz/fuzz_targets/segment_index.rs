//! A segment index payload (`decode_index`) and the endpoint filters it holds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recorder::fuzzing::segment_index(data));
