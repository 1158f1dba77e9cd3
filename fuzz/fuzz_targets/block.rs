//! A block payload (`BlockView::parse`), then its dictionaries, records and end references.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recorder::fuzzing::block(data));
