//! A segment's bytes in memory: the frame walk, the metadata read from it, every block and index frame decoded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recorder::fuzzing::segment_frames(data));
