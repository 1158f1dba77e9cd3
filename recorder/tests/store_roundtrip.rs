//! Written, rotated and read back: identical.
mod common;

use std::time::Duration;

use common::*;
use recorder::lookup::{EndpointMatch, Filter, TranslationSource};
use recorder::store::{Reader, Resolution, WriterOptions, verify};

fn opts(res: Resolution, block: usize) -> WriterOptions {
    WriterOptions {
        resolution: res,
        block_records: block,
        rotate_age: Duration::from_secs(3600),
        ..WriterOptions::default()
    }
}

#[test]
fn synthetic_workload_round_trips_across_rotations() {
    for res in [Resolution::Millis, Resolution::Micros, Resolution::Nanos] {
        let dir = tempdir();
        let evs = workload(7, 400.0, 30, false);
        write(dir.path(), &evs, opts(res, 500), 3000, true);
        let mut want = expected(&evs, res);
        sort(&mut want);
        let got = read_all(dir.path());
        assert_eq!(got.len(), want.len(), "{res}");
        assert_eq!(got, want, "{res}");
        let rep = verify(dir.path()).expect("verify");
        assert!(rep.ok(), "{:?}", rep.problems);
        assert!(rep.segments >= 3, "rotations happened: {}", rep.segments);
    }
}

#[test]
fn point_queries_match_the_reference() {
    let dir = tempdir();
    let evs = workload(11, 300.0, 40, false);
    write(dir.path(), &evs, opts(Resolution::Millis, 400), 2500, true);
    let want = expected(&evs, Resolution::Millis);
    let reader = Reader::open(dir.path()).expect("reader");
    for (i, t) in want.iter().enumerate().step_by(97) {
        let at = t.start + Duration::from_millis((i % 5) as u64 * 300);
        let f = Filter {
            from: at,
            to: at,
            proto: None,
            outside: Some(EndpointMatch { ip: t.outside.ip(), port: Some(t.outside.port()) }),
            inside: None,
            remote: if i % 2 == 0 {
                Some(EndpointMatch { ip: t.remote.ip(), port: None })
            } else {
                None
            },
        };
        let mut got = Vec::new();
        reader.scan(&f, &mut |x| got.push(x.clone())).expect("scan");
        let mut exp = Vec::new();
        want.as_slice().scan(&f, &mut |x| exp.push(x.clone())).expect("scan");
        sort(&mut got);
        sort(&mut exp);
        assert_eq!(got, exp, "query {i} at {at}");
        assert!(!exp.is_empty() || t.end.is_some_and(|e| e < at));
    }
}
