//! A ctnetlink datagram (`NlMsgs`, `parse_ct_msg`, `payload_errno`) as the conntrack sockets read theirs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| recorder::fuzzing::ctnetlink(data));
