//! A segment file: the metadata of a sealed `.seg` (`load_meta`) and the recovery of an `.open` one (`recover_open`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recorder::fuzzing::segment_file(data));
