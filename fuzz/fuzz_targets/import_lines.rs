//! Lines of an imported log, read by the importer of each format (`parse_jsonl_line`, `parse_conntrack_line`, `parse_ulogd_line`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recorder::fuzzing::import_lines(data));
