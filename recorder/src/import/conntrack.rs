//! The text of `conntrack -E -o timestamp[,extended]`.

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::model::{FlowEvent, Kind, Proto};

use super::entry::{LogTuple, classify_entry, l3_name, split_time, tuples_of};
use super::{CtEvent, Line, LogRecord};

/// Parses `[SECONDS.MICROSECONDS]`.
pub(super) fn parse_bracket_time(tok: &str) -> Option<Timestamp> {
    let inner = tok.strip_prefix('[')?.strip_suffix(']')?;
    let (s, us) = inner.split_once('.').unwrap_or((inner, "0"));
    let s: i64 = s.parse().ok()?;
    if us.is_empty() || us.len() > 9 || !us.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Fraction digits, scaled to nanoseconds.
    let frac: i64 = us.parse().ok()?;
    let ns = frac * 10i64.pow(9 - us.len() as u32);
    Timestamp::new(s, ns as i32).ok()
}

/// Parses ctime(3)'s `Mon Jan  5 00:00:00 2026` as UTC.
pub(super) fn parse_ctime(s: &str) -> Option<Timestamp> {
    let norm = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let dt = jiff::civil::DateTime::strptime("%a %b %d %H:%M:%S %Y", &norm).ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// Reads a `conntrack -E -o timestamp[,extended]` line.
pub fn parse_conntrack_line(line: &str) -> Result<Line, String> {
    let mut toks = line.split_whitespace().peekable();
    let Some(first) = toks.next() else {
        return Ok(Line::Ignored("blank line"));
    };
    if first == "conntrack" && line.contains("flow events have been shown") {
        return Ok(Line::Ignored("conntrack's closing summary"));
    }
    let at = parse_bracket_time(first).ok_or_else(|| {
        format!("expected a [SECONDS.MICROSECONDS] time first (conntrack -E -o timestamp), found {first:?}")
    })?;
    let event = match toks.next() {
        Some("[NEW]") => CtEvent::New,
        Some("[DESTROY]") => CtEvent::Destroy,
        Some("[UPDATE]") => return Ok(Line::Ignored("UPDATE event")),
        other => {
            return Err(format!("expected [NEW], [UPDATE] or [DESTROY], found {other:?}"));
        }
    };
    // Extended output names the layer 3 protocol first.
    if toks.peek().is_some_and(|l3| *l3 == "ipv4" || *l3 == "ipv6") {
        toks.next();
        toks.next();
    }
    let _l4_name = toks.next().ok_or("missing protocol")?;
    let l4: u8 = toks
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or("expected the protocol number after its name")?;
    let proto = Proto(l4);
    let mut tuples = [LogTuple::default(); 2];
    let mut current: Option<usize> = None;
    let (mut zone, mut delta, mut start_str) = (0u16, None::<u64>, None::<String>);
    while let Some(tok) = toks.next() {
        if let Some(rest) = tok.strip_prefix("[start=") {
            // `[start=Mon Jan  5 00:00:00 2026]` spans several tokens.
            let mut s = rest.to_owned();
            let mut t = tok;
            while !t.ends_with(']') {
                match toks.next() {
                    Some(n) => {
                        s.push(' ');
                        s.push_str(n);
                        t = n;
                    }
                    None => return Err("unterminated [start=".to_owned()),
                }
            }
            start_str = Some(s.trim_end_matches(']').to_owned());
            continue;
        }
        if tok.starts_with("[stop=") {
            if !tok.ends_with(']') {
                for n in toks.by_ref() {
                    if n.ends_with(']') {
                        break;
                    }
                }
            }
            continue;
        }
        let Some((key, value)) = tok.split_once('=') else {
            // Timeout, TCP state, [UNREPLIED], [ASSURED] …
            continue;
        };
        if key == "src" {
            current = match current {
                None => Some(0),
                Some(0) => Some(1),
                Some(_) => return Err("more than two tuples".to_owned()),
            };
        }
        if let Some(i) = current
            && tuples[i].set(proto.is_icmp(), key, value)?
        {
            continue;
        }
        match key {
            "zone" => zone = value.parse().map_err(|_| format!("bad zone={value}"))?,
            "delta-time" => {
                delta = Some(value.parse().map_err(|_| format!("bad delta-time={value}"))?)
            }
            _ => {}
        }
    }
    if current != Some(1) {
        return Err("expected two tuples (src=… dst=… twice)".to_owned());
    }
    let icmp = proto.is_icmp();
    let orig = tuples[0].complete(icmp)?;
    let reply = tuples[1].complete(icmp)?;
    let Some(translation) = classify_entry(proto, orig, reply, zone, at)? else {
        return Ok(Line::NotNat);
    };
    let start = match (delta, start_str) {
        (Some(d), _) => i64::try_from(d)
            .ok()
            .and_then(|d| at.checked_sub(jiff::SignedDuration::from_secs(d)).ok()),
        (None, Some(s)) => Some(parse_ctime(&s).ok_or_else(|| format!("bad [start={s}]"))?),
        (None, None) => None,
    };
    Ok(Line::Record(LogRecord {
        event,
        at,
        start: if event == CtEvent::Destroy { start } else { None },
        translation,
    }))
}

/// Appends `ev` as a `conntrack -E -o timestamp,extended` line (with its newline): a start as a
/// `[NEW]` line at its start time, an end as a `[DESTROY]` line at its end time with
/// `delta-time` (as with `nf_conntrack_timestamp=1`).
pub fn render_conntrack(ev: &FlowEvent, out: &mut String) {
    let t = ev.translation();
    let (new, at) = match ev {
        FlowEvent::Start(t) => (true, t.start),
        FlowEvent::End(t) => (false, t.end.unwrap_or(t.start)),
    };
    let (sec, usec) = split_time(at);
    let (l3, l3n) = l3_name(t.inside.ip());
    let l4 = t.proto.name().unwrap_or("unknown");
    let _ = write!(
        out,
        "[{sec:010}.{usec:06}]\t{:>9} {l3:<8} {l3n} {l4:<8} {} ",
        if new { "[NEW]" } else { "[DESTROY]" },
        t.proto.0
    );
    if new {
        let timeout = if t.proto == Proto::TCP { "120 SYN_SENT " } else { "30 " };
        out.push_str(timeout);
    }
    let tuples = tuples_of(t);
    // ICMP echo ids: the original one is the inside's (the outside's for DNAT), the reply's the
    // other one.
    let ids = if t.kind == Kind::Dnat {
        [t.outside.port(), t.inside.port()]
    } else {
        [t.inside.port(), t.outside.port()]
    };
    for (i, (src, dst)) in tuples.iter().enumerate() {
        let _ = write!(out, "src={} dst={} ", src.ip(), dst.ip());
        if t.proto.is_icmp() {
            let (req, rep) = if t.proto == Proto::ICMP { (8, 0) } else { (128, 129) };
            let _ = write!(out, "type={} code=0 id={} ", if i == 0 { req } else { rep }, ids[i]);
        } else {
            let _ = write!(out, "sport={} dport={} ", src.port(), dst.port());
        }
        if i == 0 && new {
            out.push_str("[UNREPLIED] ");
        }
    }
    if !new {
        if t.proto == Proto::TCP {
            out.push_str("[ASSURED] ");
        }
        if t.zone != 0 {
            let _ = write!(out, "zone={} ", t.zone);
        }
        let (start_sec, _) = split_time(t.start);
        let _ = write!(out, "delta-time={} ", (sec - start_sec).max(0));
    } else if t.zone != 0 {
        let _ = write!(out, "zone={} ", t.zone);
    }
    out.pop();
    out.push('\n');
}
