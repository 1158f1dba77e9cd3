//! Candidate scans: the rows of a block that may match a [`Select`], found from the port,
//! inside-address and remote-address columns alone, most of them compared many rows at a time.

use super::decode::BlockView;
use super::format::{Column, REM_ESCAPE};

/// What a scan looks for in one block: addresses as indices into the block's dictionaries,
/// each with an optional port.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Select {
    pub inside: Option<(u32, Option<u16>)>,
    pub outside: Option<(u32, Option<u16>)>,
    pub remote: Option<(u32, Option<u16>)>,
}

/// How many inside indices [`rows_in_planes`] compares at once.
pub(super) const PLANE_SCAN_MAX: usize = 16;

/// The rows whose bytes in `planes` (one plane per byte of a value, equal lengths, least
/// significant first) spell one of `want` (1 to [`PLANE_SCAN_MAX`] values), ascending. Works 64
/// rows at a time into a bit mask, which the compiler turns into vector compares: a per-row
/// filter with a closure does not vectorise, and this scan runs over up to a whole block per
/// candidate block of a query.
pub(super) fn rows_in_planes<const P: usize>(planes: [&[u8]; P], want: &[[u8; P]]) -> Vec<u32> {
    fn scan<const P: usize, const K: usize>(
        planes: [&[u8]; P],
        want: [[u8; P]; K],
        out: &mut Vec<u32>,
    ) {
        let len = planes[0].len();
        let full = len / 64 * 64;
        let mut base = 0;
        while base < full {
            // Fixed-size chunks: no bounds checks in the loops below, which vectorise.
            let chunk: [&[u8; 64]; P] =
                std::array::from_fn(|p| planes[p][base..base + 64].try_into().expect("64 bytes"));
            let mut hits = [0u8; 64];
            for w in &want {
                let mut eq = [1u8; 64];
                for p in 0..P {
                    for j in 0..64 {
                        eq[j] &= u8::from(chunk[p][j] == w[p]);
                    }
                }
                for j in 0..64 {
                    hits[j] |= eq[j];
                }
            }
            let mut mask = 0u64;
            for (j, &h) in hits.iter().enumerate() {
                mask |= u64::from(h) << j;
            }
            while mask != 0 {
                out.push((base as u32) + mask.trailing_zeros());
                mask &= mask - 1;
            }
            base += 64;
        }
        plain(planes, &want, full, out);
    }
    /// The rows from `from` on, one at a time.
    fn plain<const P: usize>(
        planes: [&[u8]; P],
        want: &[[u8; P]],
        from: usize,
        out: &mut Vec<u32>,
    ) {
        #[expect(clippy::needless_range_loop, reason = "the row index addresses every plane")]
        for i in from..planes[0].len() {
            if want.iter().any(|w| (0..P).all(|p| planes[p][i] == w[p])) {
                out.push(i as u32);
            }
        }
    }
    debug_assert!(planes.iter().all(|p| p.len() == planes[0].len()));
    let mut out = Vec::new();
    // One monomorphic scan per count of values, so that each unrolls.
    macro_rules! by_count {
        ($($k:literal)*) => {
            match want.len() {
                $($k => scan::<P, $k>(planes, want.try_into().expect("length checked"), &mut out),)*
                _ => plain(planes, want, 0, &mut out),
            }
        };
    }
    by_count!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
    out
}

/// The `j`-th escaped remote index of a remote column of `n` one-byte codes followed by
/// `n_big` escaped values in three byte planes.
pub(super) fn escaped_remote(ri: &[u8], n: usize, n_big: usize, j: usize) -> u32 {
    (0..3).fold(REM_ESCAPE, |a, k| a + (u32::from(ri[n + k * n_big + j]) << (8 * k)))
}

impl BlockView<'_> {
    /// The rows that may match `sel`, judged from the port, inside-address and remote-address
    /// columns alone (the sequential columns are not read): every row whose record matches `sel`
    /// is among them. `None` when `sel` names nothing these columns can test.
    pub fn candidates(&self, sel: &Select) -> Result<Option<Vec<u32>>, String> {
        let n = usize::try_from(self.meta.n_full).map_err(|_| "too many records")?;
        if n > 1 << 24 {
            return Err("too many records".into());
        }
        let mut rows: Option<Vec<u32>> = None;
        // Keeps the rows (all, or those still candidates) that pass `test`.
        fn narrow(n: usize, rows: &mut Option<Vec<u32>>, test: impl Fn(usize) -> bool) {
            *rows = Some(match rows.take() {
                None => {
                    let mut v = Vec::new();
                    for i in 0..n {
                        if test(i) {
                            v.push(i as u32);
                        }
                    }
                    v
                }
                Some(mut v) => {
                    v.retain(|&i| test(i as usize));
                    v
                }
            });
        }
        let port = |col: &[u8], i: usize| u16::from(col[i]) | (u16::from(col[n + i]) << 8);
        let out_port = sel.outside.and_then(|(_, p)| p);
        let in_port = sel.inside.and_then(|(_, p)| p);
        if out_port.is_some() || in_port.is_some() {
            let ip = self.col_ref(Column::InsidePort)?;
            if ip.len() != 2 * n {
                return Err("port columns disagree with the record count".into());
            }
            if let Some(want) = in_port {
                narrow(n, &mut rows, |i| port(ip, i) == want);
            }
            if let Some(want) = out_port {
                let op = self.col_ref(Column::PortDelta)?;
                if op.len() != 2 * n {
                    return Err("port columns disagree with the record count".into());
                }
                match rows.as_mut() {
                    Some(v) => v.retain(|&i| {
                        port(op, i as usize).wrapping_add(port(ip, i as usize)) == want
                    }),
                    None => {
                        // The first test, over every row: byte planes zipped (no index checks).
                        let (il, ih) = ip.split_at(n);
                        let (ol, oh) = op.split_at(n);
                        let mut v = Vec::new();
                        for (i, (((&a, &b), &c), &d)) in
                            il.iter().zip(ih).zip(ol).zip(oh).enumerate()
                        {
                            let p = (u16::from(a) | (u16::from(b) << 8))
                                .wrapping_add(u16::from(c) | (u16::from(d) << 8));
                            if p == want {
                                v.push(i as u32);
                            }
                        }
                        rows = Some(v);
                    }
                }
            }
        }
        if let Some((want, _)) = sel.inside {
            let ii = self.col_ref(Column::InsideIndex)?;
            if ii.len() != 4 * n {
                return Err("address columns disagree with the record count".into());
            }
            let b = want.to_le_bytes();
            match rows.as_mut() {
                Some(v) => v.retain(|&i| (0..4).all(|k| ii[k * n + i as usize] == b[k])),
                None => {
                    // The first test, over every row: byte planes zipped (no index checks).
                    let (p0, rest) = ii.split_at(n);
                    let (p1, rest) = rest.split_at(n);
                    let (p2, p3) = rest.split_at(n);
                    let mut v = Vec::new();
                    for (i, (((&x0, &x1), &x2), &x3)) in
                        p0.iter().zip(p1).zip(p2).zip(p3).enumerate()
                    {
                        if x0 == b[0] && x1 == b[1] && x2 == b[2] && x3 == b[3] {
                            v.push(i as u32);
                        }
                    }
                    rows = Some(v);
                }
            }
        }
        if let Some((want, _)) = sel.remote {
            let ri = self.col_ref(Column::RemoteIndex)?;
            if ri.len() < n {
                return Err("address columns disagree with the record count".into());
            }
            if want < REM_ESCAPE {
                narrow(n, &mut rows, |i| u32::from(ri[i]) == want);
            } else {
                // Escaped indices: the j-th escape's value is in the planes after the codes.
                let n_big = ri[..n].iter().filter(|&&c| u32::from(c) == REM_ESCAPE).count();
                if ri.len() != n + 3 * n_big {
                    return Err("address columns disagree with the record count".into());
                }
                let mut hit = vec![false; n];
                let mut j = 0;
                for (i, &c) in ri[..n].iter().enumerate() {
                    if u32::from(c) == REM_ESCAPE {
                        let v = escaped_remote(ri, n, n_big, j);
                        hit[i] = v == want;
                        j += 1;
                    }
                }
                narrow(n, &mut rows, |i| hit[i]);
            }
        }
        Ok(rows)
    }
}
