use std::net::IpAddr;

use super::decode::BlockView;
use super::encode::{DUR_SPLIT, encode_block};
use super::format::{BlockKind, Column, Cur, REM_ESCAPE, put_uvarint, zigzag};
use super::records::Rec;
use super::scan::{PLANE_SCAN_MAX, Select, rows_in_planes};

#[test]
fn plane_scans_find_exactly_the_rows_of_the_wanted_pairs() {
    // 1 000 rows (not a multiple of 64) of pseudo-random pairs from a small alphabet, so
    // that every wanted pair occurs, also at chunk edges.
    let mut x = 0x2545_f491u32;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let (lo, hi): (Vec<u8>, Vec<u8>) =
        (0..1000).map(|_| ((next() % 5) as u8, (next() % 3) as u8)).unzip();
    let third: Vec<u8> = (0..1000).map(|_| (next() % 2) as u8).collect();
    let zero = vec![0u8; 1000];
    let mut pairs = vec![[0, 0], [4, 2], [1, 1], [3, 0], [2, 2], [9, 9]];
    // Up to the most values compared at once, and one more (the plain loop).
    pairs.extend((10u8..).take(PLANE_SCAN_MAX - 6).map(|v| [v, v]));
    pairs.push([2, 0]);
    assert_eq!(pairs.len(), PLANE_SCAN_MAX + 1);
    for k in 1..=pairs.len() {
        let want = &pairs[..k];
        let expect: Vec<u32> =
            (0..lo.len()).filter(|&i| want.contains(&[lo[i], hi[i]])).map(|i| i as u32).collect();
        assert!(!expect.is_empty());
        assert_eq!(rows_in_planes([&lo, &hi], want), expect, "{k} pairs");
        // Prefixes end anywhere in a chunk.
        for cut in [0, 1, 63, 64, 65, 999] {
            let e: Vec<u32> = expect.iter().copied().filter(|&i| (i as usize) < cut).collect();
            assert_eq!(rows_in_planes([&lo[..cut], &hi[..cut]], want), e, "{k} pairs, {cut} rows");
        }
        // Four planes: the third byte must match too.
        let want4: Vec<[u8; 4]> = want.iter().map(|&[a, b]| [a, b, 1, 0]).collect();
        let expect4: Vec<u32> =
            expect.iter().copied().filter(|&i| third[i as usize] == 1).collect();
        assert_eq!(rows_in_planes([&lo, &hi, &third, &zero], &want4), expect4, "{k} values");
    }
}

/// A small deterministic generator for the tests below.
struct Xs(u64);
impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn skip_and_sum_agree_with_decoding_one_value_at_a_time() {
    let mut g = Xs(0x9e37_79b9_7f4a_7c15);
    // Runs of one-byte values (the fast path) mixed with longer and negative ones.
    let vals: Vec<i64> = (0..5_000)
        .map(|_| match g.below(10) {
            0 => -(g.below(1 << 40) as i64),
            1 => g.below(1 << 20) as i64,
            _ => g.below(64) as i64 - 32,
        })
        .collect();
    let mut buf = Vec::new();
    for &v in &vals {
        put_uvarint(&mut buf, zigzag(v));
    }
    for _ in 0..300 {
        let a = g.below(vals.len() as u64) as usize;
        let b = a + g.below((vals.len() - a) as u64 + 1) as usize;
        let mut c = Cur::new(&buf);
        c.skip(a).expect("skip");
        let mut one = Cur::new(&buf);
        for _ in 0..a {
            one.ivarint().expect("one");
        }
        assert_eq!(c.pos, one.pos, "skip({a})");
        let sum = c.sum(b - a).expect("sum");
        assert_eq!(sum, vals[a..b].iter().fold(0i64, |x, &v| x.wrapping_add(v)), "sum of {a}..{b}");
        if b < vals.len() {
            assert_eq!(c.ivarint().expect("next"), vals[b]);
        }
    }
    assert!(Cur::new(&buf).skip(vals.len() + 1).is_err());
    assert!(Cur::new(&buf).sum(vals.len() + 1).is_err());
}

#[test]
fn records_at_equals_the_full_decode_for_any_rows() {
    // Over 65 536 inside addresses (indices need the upper byte planes), zones, escaped
    // services and remotes, durations split by service, starts out of order.
    let n_in = 100_000u32;
    let addrs: Vec<IpAddr> =
        (0..n_in + 400).map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes())).collect();
    let mut g = Xs(42);
    let recs: Vec<Rec> = (0..90_000u32)
        .map(|i| {
            let svc = g.below(300) as u16;
            Rec {
                start: i64::from(i) * 3 + g.below(2_000) as i64,
                end: (g.below(5) != 0)
                    .then(|| i64::from(i) * 3 + 30_000 + i64::from(svc % 7) * 1_000),
                inside: if i % 4 == 0 { (i / 4) % 50 } else { 50 + i },
                outside: n_in + g.below(40) as u32,
                remote: n_in + 40 + g.below(360) as u32,
                in_port: g.below(65_536) as u16,
                out_port: g.below(65_536) as u16,
                rem_port: if svc < 250 { 443 + svc % 9 } else { svc },
                zone: if g.below(50) == 0 { g.below(300) as u16 } else { 0 },
                kind: (i % 3) as u8,
                proto: if svc.is_multiple_of(2) { 6 } else { 17 },
                flags: (i % 5) as u8,
                carried: i % 97 == 0,
            }
        })
        .collect();
    let mut payload = Vec::new();
    encode_block(BlockKind::Sealed, 0, 0, &recs, &[], &addrs, 1, &mut payload).expect("encode");
    let v = BlockView::parse(&payload).expect("parse");
    let d = v.dicts().expect("dicts");
    let (all, _) = v.records(&d).expect("all");
    assert_eq!(all.len(), recs.len());
    for (a, r) in all.iter().zip(&recs) {
        assert_eq!(
            (a.start, a.end, a.zone, a.rem_port, a.proto),
            (r.start, r.end, r.zone, r.rem_port, r.proto)
        );
        assert_eq!(
            (d.inside[a.inside as usize], d.outside[a.outside as usize]),
            (addrs[r.inside as usize], addrs[r.outside as usize])
        );
    }
    assert!(d.inside.len() > 65_536, "the test needs wide inside indices");
    assert_eq!(
        v.col_ref(Column::Duration).expect("durations").first(),
        Some(&8),
        "the test needs split duration streams"
    );
    assert!(v.col_ref(Column::Zone).expect("zones").iter().any(|&z| z != 0));
    for trial in 0..40 {
        // One inside index (all of its rows, as an inside-host query asks), or a random set.
        let rows: Vec<u32> = if trial % 2 == 0 {
            let who = all[g.below(all.len() as u64) as usize].inside;
            (0..all.len() as u32).filter(|&i| all[i as usize].inside == who).collect()
        } else {
            let p = 1 + g.below(200);
            (0..all.len() as u32).filter(|_| g.below(1_000) < p).collect()
        };
        let (some, _) = v.records_at(d.lens(), Some(&rows)).expect("some");
        let want: Vec<Rec> = rows.iter().map(|&i| all[i as usize]).collect();
        assert_eq!(some, want, "trial {trial}");
    }
    let (none, _) = v.records_at(d.lens(), Some(&[])).expect("none");
    assert!(none.is_empty());
    assert!(v.records_at(d.lens(), Some(&[5, 3])).is_err(), "rows out of order");
}

#[test]
fn candidates_are_exactly_the_rows_whose_ports_and_addresses_match() {
    // 700 addresses: remote indices above 255 are escaped.
    let addrs: Vec<IpAddr> =
        (0..700u32).map(|i| IpAddr::from([10, 1, (i >> 8) as u8, i as u8])).collect();
    let recs: Vec<Rec> = (0..3000u32)
        .map(|i| Rec {
            start: i64::from(i) * 3,
            end: Some(i64::from(i) * 3 + 100),
            inside: i % 11,
            outside: 11 + i % 3,
            remote: 20 + (i * 7) % 600,
            in_port: 40_000 + (i % 29) as u16,
            out_port: if i % 5 == 0 { 1024 + (i % 31) as u16 } else { 40_000 + (i % 29) as u16 },
            rem_port: 443,
            zone: 0,
            kind: 0,
            proto: 6,
            flags: 0,
            carried: false,
        })
        .collect();
    let mut payload = Vec::new();
    encode_block(BlockKind::Sealed, 0, 0, &recs, &[], &addrs, 1, &mut payload).expect("encode");
    let v = BlockView::parse(&payload).expect("parse");
    let d = v.dicts().expect("dicts");
    let (all, _) = v.records(&d).expect("all");
    assert_eq!(v.candidates(&Select::default()).expect("candidates"), None);
    let pos = |dict: &[IpAddr], id: u32| {
        dict.iter().position(|a| *a == addrs[id as usize]).expect("in dictionary") as u32
    };
    let mut remote_escaped = 0;
    for probe in (0..3000).step_by(97) {
        let r = &recs[probe];
        let (ri, ii, oi) =
            (pos(&d.remote, r.remote), pos(&d.inside, r.inside), pos(&d.outside, r.outside));
        remote_escaped += usize::from(ri >= REM_ESCAPE);
        for sel in [
            Select { outside: Some((oi, Some(r.out_port))), ..Select::default() },
            Select { inside: Some((ii, None)), ..Select::default() },
            Select {
                inside: Some((ii, Some(r.in_port))),
                remote: Some((ri, None)),
                ..Select::default()
            },
            Select {
                outside: Some((oi, Some(r.out_port))),
                remote: Some((ri, Some(443))),
                ..Select::default()
            },
        ] {
            let got = v.candidates(&sel).expect("candidates").expect("testable");
            let want: Vec<u32> = (0..all.len() as u32)
                .filter(|&i| {
                    let a = &all[i as usize];
                    sel.inside
                        .is_none_or(|(x, p)| a.inside == x && p.is_none_or(|p| p == a.in_port))
                        && sel.outside.is_none_or(|(_, p)| p.is_none_or(|p| p == a.out_port))
                        && sel.remote.is_none_or(|(x, _)| a.remote == x)
                })
                .collect();
            assert!(want.contains(&(probe as u32)));
            assert_eq!(got, want, "{sel:?}");
        }
    }
    assert!(remote_escaped > 3, "escaped remote indices were probed {remote_escaped} times");
}

#[test]
fn escaped_services_remotes_and_duration_streams_round_trip() {
    // 600 remotes (indices past the one-byte escape), 400 (protocol, port) pairs (past the
    // 255-entry service table), DNS-like durations that make the writer split streams.
    // Every seventh address IPv6: dictionaries mix both families.
    let addrs: Vec<IpAddr> = (0..1000u32)
        .map(|i| match i % 7 {
            0 => IpAddr::from(
                (0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i)).to_be_bytes(),
            ),
            _ => IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
        })
        .collect();
    let mut x = 12345u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let recs: Vec<Rec> = (0..20_000i64)
        .map(|i| {
            let r = rnd();
            let dns = r % 3 == 0;
            let start = i * 3;
            Rec {
                start,
                end: (r % 7 != 0).then(|| {
                    start
                        + if dns {
                            30_000 + (r >> 8) as i64 % 40
                        } else {
                            (r >> 8) as i64 % 500_000
                        }
                }),
                inside: (r >> 20) as u32 % 300,
                outside: 300 + (r >> 30) as u32 % 4,
                remote: 400 + (r >> 34) as u32 % 600,
                in_port: (r >> 40) as u16,
                out_port: (r >> 44) as u16,
                rem_port: if dns { 53 } else { (r >> 50) as u16 % 400 },
                zone: 0,
                kind: 0,
                proto: if dns { 17 } else { 6 + (r >> 60) as u8 % 2 },
                flags: 0,
                carried: false,
            }
        })
        .collect();
    let mut payload = Vec::new();
    encode_block(BlockKind::Sealed, 0, 0, &recs, &[], &addrs, 3, &mut payload).expect("encode");
    let v = BlockView::parse(&payload).expect("parse");
    assert_eq!(
        v.col(Column::Duration).expect("durations")[0],
        DUR_SPLIT,
        "DNS-like durations are split"
    );
    let d = v.dicts().expect("dicts");
    let (got, _) = v.records(&d).expect("records");
    let back: Vec<Rec> = got
        .iter()
        .map(|r| Rec {
            inside: addrs.iter().position(|a| *a == d.inside[r.inside as usize]).expect("inside")
                as u32,
            outside: addrs
                .iter()
                .position(|a| *a == d.outside[r.outside as usize])
                .expect("outside") as u32,
            remote: addrs.iter().position(|a| *a == d.remote[r.remote as usize]).expect("remote")
                as u32,
            ..*r
        })
        .collect();
    assert_eq!(back, recs);
    let few: Vec<Rec> = recs.iter().filter(|r| r.in_port % 5 == 0).copied().collect();
    let rows: Vec<u32> =
        (0..recs.len() as u32).filter(|&i| recs[i as usize].in_port.is_multiple_of(5)).collect();
    let (some, _) = v.records_at(d.lens(), Some(&rows)).expect("some");
    assert_eq!(some.len(), few.len());
    assert!(
        some.iter()
            .zip(&few)
            .all(|(a, b)| a.end == b.end && a.rem_port == b.rem_port && a.proto == b.proto)
    );
    // A service code past the table is refused.
    let mut bad = payload.clone();
    let v = BlockView::parse(&payload).expect("parse");
    let (_, _, col12) = v.cols[Column::ServiceCode as usize];
    assert_eq!(v.cols[Column::ServiceCode as usize].0, 1, "service codes are compressed");
    let at = col12.as_ptr() as usize - payload.as_ptr() as usize;
    bad[at..at + col12.len()].fill(0);
    assert!(BlockView::parse(&bad).and_then(|v| v.records(&d)).is_err());
}

#[test]
fn varints_round_trip() {
    let mut b = Vec::new();
    for v in [0u64, 1, 127, 128, 300, u64::MAX] {
        put_uvarint(&mut b, v);
    }
    for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
        put_uvarint(&mut b, zigzag(v));
    }
    let mut c = Cur::new(&b);
    for v in [0u64, 1, 127, 128, 300, u64::MAX] {
        assert_eq!(c.uvarint().expect("varint"), v);
    }
    for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
        assert_eq!(c.ivarint().expect("varint"), v);
    }
    assert!(c.u8().is_err());
}
