//! ulogd2's JSON output (NFCT through IP2STR).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use jiff::Timestamp;
use serde::Deserialize;

use crate::model::{FlowEvent, Proto};

use super::entry::{classify_entry, l3_name, split_time, tuples_of};
use super::{CtEvent, Line, LogRecord};

/// The fields of a ulogd2 JSON line natrec reads (others are ignored). Addresses come from
/// IP2STR: `src_ip`/`dest_ip` (its CIM names) or the plain key names.
#[derive(Debug, Deserialize)]
struct UlogdLine<'a> {
    #[serde(rename = "ct.event")]
    event: Option<u32>,
    #[serde(rename = "orig.ip.protocol")]
    proto: Option<u8>,
    #[serde(borrow, rename = "src_ip", alias = "orig.ip.saddr.str", alias = "orig.ip.saddr")]
    orig_src: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "dest_ip", alias = "orig.ip.daddr.str", alias = "orig.ip.daddr")]
    orig_dst: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "reply.ip.saddr.str", alias = "reply.ip.saddr")]
    reply_src: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "reply.ip.daddr.str", alias = "reply.ip.daddr")]
    reply_dst: Option<Cow<'a, str>>,
    #[serde(rename = "orig.l4.sport")]
    orig_sport: Option<u16>,
    #[serde(rename = "orig.l4.dport")]
    orig_dport: Option<u16>,
    #[serde(rename = "reply.l4.sport")]
    reply_sport: Option<u16>,
    #[serde(rename = "reply.l4.dport")]
    reply_dport: Option<u16>,
    #[serde(rename = "flow.start.sec")]
    start_sec: Option<i64>,
    #[serde(rename = "flow.start.usec")]
    start_usec: Option<u32>,
    #[serde(rename = "flow.end.sec")]
    end_sec: Option<i64>,
    #[serde(rename = "flow.end.usec")]
    end_usec: Option<u32>,
    #[serde(borrow, alias = "@timestamp")]
    timestamp: Option<Cow<'a, str>>,
}

fn ulogd_addr(v: Option<&Cow<'_, str>>, key: &str) -> Result<IpAddr, String> {
    let s =
        v.ok_or_else(|| format!("no {key} field (the ulogd stack needs IP2STR before JSON)"))?;
    s.parse().map_err(|_| format!("{key} {s:?} is not an IP address"))
}

fn ulogd_time(
    sec: Option<i64>,
    usec: Option<u32>,
    what: &str,
) -> Result<Option<Timestamp>, String> {
    let Some(sec) = sec else {
        return Ok(None);
    };
    let usec = usec.unwrap_or(0);
    if usec >= 1_000_000 {
        return Err(format!("flow.{what}.usec {usec} is not below 1000000"));
    }
    Timestamp::new(sec, (usec * 1000) as i32).map(Some).map_err(|e| format!("flow.{what}.sec: {e}"))
}

/// Parses ulogd's `timestamp`: `2026-01-05T00:00:00+0000` (maybe with `.uuuuuu`), or, as
/// ulogd2 2.0.8 writes it, without an offset (`2026-11-24T22:56:40`): the gateway's local time,
/// read in the system time zone (`TZ`, `/etc/localtime`) of the importing machine.
pub(super) fn parse_ulogd_timestamp(s: &str) -> Option<Timestamp> {
    if let Ok(t) =
        jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M:%S%.f%z", s).and_then(|t| t.to_timestamp())
    {
        return Some(t);
    }
    let civil = jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M:%S%.f", s).ok()?.to_datetime().ok()?;
    civil.to_zoned(jiff::tz::TimeZone::system()).ok().map(|z| z.timestamp())
}

/// Reads a line of ulogd2's JSON output (NFCT through IP2STR).
pub fn parse_ulogd_line(line: &str) -> Result<Line, String> {
    if line.trim().is_empty() {
        return Ok(Line::Ignored("blank line"));
    }
    let u: UlogdLine<'_> =
        serde_json::from_str(line).map_err(|e| format!("not a ulogd JSON object: {e}"))?;
    let event = match u.event {
        Some(1) => CtEvent::New,
        Some(4) => CtEvent::Destroy,
        Some(_) => return Ok(Line::Ignored("conntrack UPDATE event")),
        None => return Ok(Line::Ignored("not a conntrack event (no ct.event)")),
    };
    let proto = Proto(u.proto.ok_or("no orig.ip.protocol")?);
    let orig = (
        ulogd_addr(u.orig_src.as_ref(), "src_ip")?,
        ulogd_addr(u.orig_dst.as_ref(), "dest_ip")?,
        u.orig_sport.unwrap_or(0),
        u.orig_dport.unwrap_or(0),
    );
    let reply = (
        ulogd_addr(u.reply_src.as_ref(), "reply.ip.saddr.str")?,
        ulogd_addr(u.reply_dst.as_ref(), "reply.ip.daddr.str")?,
        u.reply_sport.unwrap_or(0),
        u.reply_dport.unwrap_or(0),
    );
    let start = ulogd_time(u.start_sec, u.start_usec, "start")?;
    let end = ulogd_time(u.end_sec, u.end_usec, "end")?;
    let stamp = match &u.timestamp {
        Some(s) => Some(parse_ulogd_timestamp(s).ok_or_else(|| format!("bad timestamp {s:?}"))?),
        None => None,
    };
    let at = match event {
        CtEvent::New => start.or(stamp),
        CtEvent::Destroy => end.or(stamp),
    }
    .ok_or("no time (flow.start.sec, flow.end.sec or timestamp)")?;
    let Some(translation) = classify_entry(proto, orig, reply, 0, at)? else {
        return Ok(Line::NotNat);
    };
    Ok(Line::Record(LogRecord {
        event,
        at,
        start: if event == CtEvent::Destroy { start } else { None },
        translation,
    }))
}

/// Appends `ev` as a line of ulogd2's JSON output (NFCT through IP2STR, `ct.event` 1 or 4) with
/// its newline. `timestamp` is the event's time in UTC; `ct.id` is derived from the key and
/// start. Zones are not part of ulogd's NFCT keys and are lost.
pub fn render_ulogd_json(ev: &FlowEvent, out: &mut String) {
    let t = ev.translation();
    let (new, at) = match ev {
        FlowEvent::Start(t) => (true, t.start),
        FlowEvent::End(t) => (false, t.end.unwrap_or(t.start)),
    };
    let [(os, od), (rs, rd)] = tuples_of(t);
    let stamp = at.to_zoned(jiff::tz::TimeZone::UTC).strftime("%Y-%m-%dT%H:%M:%S+0000").to_string();
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(t.key(), t.start), &mut h);
    let id = std::hash::Hasher::finish(&h) as u32;
    let p = t.proto.0;
    let _ =
        write!(out, r#"{{"timestamp": "{stamp}", "dvc": "Netfilter", "orig.ip.protocol": {p}, "#);
    if t.proto.is_icmp() {
        let _ = write!(
            out,
            r#""orig.raw.pktlen": 0, "orig.raw.pktcount": 0, "reply.ip.protocol": {p}, "reply.raw.pktlen": 0, "reply.raw.pktcount": 0, "icmp.code": 0, "icmp.type": 8, "#
        );
    } else {
        let _ = write!(
            out,
            r#""orig.l4.sport": {}, "orig.l4.dport": {}, "orig.raw.pktlen": 0, "orig.raw.pktcount": 0, "reply.ip.protocol": {p}, "reply.l4.sport": {}, "reply.l4.dport": {}, "reply.raw.pktlen": 0, "reply.raw.pktcount": 0, "#,
            os.port(),
            od.port(),
            rs.port(),
            rd.port()
        );
    }
    let (ss, su) = split_time(t.start);
    let _ = write!(
        out,
        r#""ct.mark": 0, "ct.id": {id}, "ct.event": {}, "flow.start.sec": {ss}, "flow.start.usec": {su}, "#,
        if new { 1 } else { 4 }
    );
    if !new {
        let (es, eu) = split_time(at);
        let _ = write!(out, r#""flow.end.sec": {es}, "flow.end.usec": {eu}, "#);
    }
    let _ = writeln!(
        out,
        r#""oob.family": {}, "oob.protocol": 0, "src_ip": "{}", "dest_ip": "{}", "reply.ip.saddr.str": "{}", "reply.ip.daddr.str": "{}"}}"#,
        l3_name(os.ip()).1,
        os.ip(),
        od.ip(),
        rs.ip(),
        rd.ip()
    );
}
