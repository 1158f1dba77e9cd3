//! Writes the seed corpora of the fuzz targets in `fuzz/` from real data: the segments a writer
//! makes of a synthetic workload (a sealed one with its index and endpoint filters, an `.open`
//! one holding a checkpoint, another holding live blocks with end references), the lines the
//! importers read, and ctnetlink messages laid out as the kernel sends them.
//!
//! `cargo run -p recorder --features fuzzing --example fuzz_seeds -- fuzz/corpus`

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use recorder::fuzzing::ctnetlink::{
    Builder, CTA_ID, CTA_MARK, CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE,
    CTA_STATUS, CTA_TIMEOUT, CTA_TIMESTAMP, CTA_TIMESTAMP_START, CTA_TIMESTAMP_STOP,
    CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_ZONE, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET,
    IPCTNL_MSG_CT_NEW, NFNL_SUBSYS_CTNETLINK, NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR, netlink, ports,
};
use recorder::fuzzing::{SEGMENT_HEADER_LEN, frames};
use recorder::import::{Format, render};
use recorder::model::FlowEvent;
use recorder::store::{Writer, WriterOptions};
use recorder::synth::{self, Limit, ProtoMix, WorkloadParams};
use recorder_common::{AF_INET, AF_INET6, IPS_CONFIRMED, IPS_DST_NAT, IPS_SRC_NAT};

/// Seeds larger than this are left out: libFuzzer's inputs grow up to the largest seed.
const MAX_SEED: usize = 64 << 10;

fn main() -> Result<()> {
    let out = std::env::args_os().nth(1).map(PathBuf::from).context("usage: fuzz_seeds DIR")?;
    let tmp = tempfile::tempdir()?;
    let mut seeds = Seeds { dir: out, written: 0 };

    // A sealed segment: blocks of every duration class, each large enough for the outside
    // address to get a port bitmap in the index; the flows still open at the seal go into the
    // next segment's checkpoint.
    let sealed_dir = tmp.path().join("sealed");
    let mut w = Writer::open(WriterOptions {
        dir: sealed_dir.clone(),
        block_records: 2048,
        ..WriterOptions::default()
    })?;
    for ev in workload(2_500, false)? {
        w.append(&ev)?;
    }
    w.close()?;
    let seg = fs::read(segment(&sealed_dir, "seg")?)?;
    let checkpoint = fs::read(segment(&sealed_dir, "open")?)?;

    // An `.open` segment as the writer leaves it between seals: live blocks of full records
    // and end references.
    let live_dir = tmp.path().join("live");
    let mut w = Writer::open(WriterOptions {
        dir: live_dir.clone(),
        block_records: 48,
        ..Default::default()
    })?;
    for ev in workload(150, true)? {
        w.append(&ev)?;
    }
    let live = fs::read(segment(&live_dir, "open")?)?;
    w.close()?;

    for (name, data) in [("sealed", &seg), ("checkpoint", &checkpoint), ("live", &live)] {
        seeds.put("segment_frames", name, data)?;
        seeds.put("segment_file", name, data)?;
        seeds.put("segment_header", &format!("header-{name}"), &data[..SEGMENT_HEADER_LEN])?;
    }
    let mut blocks = Vec::new();
    for (name, data) in [("sealed", &seg), ("checkpoint", &checkpoint), ("live", &live)] {
        for (kind, payload) in frames(data) {
            match kind {
                "block" => blocks.push((name, payload)),
                "index" => seeds.put("segment_index", "index", payload)?,
                _ => seeds.put("segment_header", "seal", payload)?,
            }
        }
    }
    // The smallest and the largest block of each segment.
    blocks.sort_by_key(|(name, p)| (*name, p.len()));
    for name in ["sealed", "checkpoint", "live"] {
        let of: Vec<&[u8]> = blocks.iter().filter(|(n, _)| *n == name).map(|(_, p)| *p).collect();
        if of.is_empty() {
            bail!("the {name} segment has no block");
        }
        seeds.put("block", &format!("{name}-smallest"), of[0])?;
        if of.len() > 1 {
            seeds.put("block", &format!("{name}-largest"), of[of.len() - 1])?;
        }
    }

    // Lines of each format, rendered from a workload with every protocol, IPv6 and DNAT, then
    // lines the renderers do not write (taken from real conntrack and ulogd2 output).
    let events: Vec<FlowEvent> = workload(40, true)?.into_iter().take(24).collect();
    for (format, name, extra) in [
        (Format::Jsonl, "jsonl", &[][..]),
        (Format::Conntrack, "conntrack", CONNTRACK_LINES),
        (Format::UlogdJson, "ulogd", ULOGD_LINES),
    ] {
        let mut text = String::new();
        for ev in &events {
            render(format, ev, &mut text)?;
        }
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        seeds.put("import_lines", name, text.as_bytes())?;
    }

    for (name, datagram) in ctnetlink_datagrams() {
        seeds.put("ctnetlink", name, &datagram)?;
    }
    eprintln!("fuzz_seeds: wrote {} seeds under {}", seeds.written, seeds.dir.display());
    Ok(())
}

/// The events of a small workload (ms times, as the store keeps them by default).
fn workload(flows: u64, drain: bool) -> Result<Vec<FlowEvent>> {
    let p = WorkloadParams {
        subscribers: 60,
        outside_pool: 1,
        remotes: 300,
        flows_per_second: 200.0,
        limit: Limit::Flows(flows),
        drain,
        resolution_ns: 1_000_000,
        dnat_share: 0.05,
        ipv6_share: 0.1,
        mix: ProtoMix { tcp: 0.5, udp: 0.45, icmp: 0.05 },
        seed: 7,
        ..WorkloadParams::default()
    };
    Ok(synth::events(&p)?.collect())
}

/// The one segment file of `dir` with extension `ext`.
fn segment(dir: &Path, ext: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|e| e == ext) {
            found.push(p);
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([p]) => Ok(p),
        Err(found) => bail!("{} holds {} .{ext} files, expected one", dir.display(), found.len()),
    }
}

struct Seeds {
    dir: PathBuf,
    written: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, name: &str, data: &[u8]) -> Result<()> {
        if data.len() > MAX_SEED {
            bail!("seed {target}/{name} has {} bytes, more than {MAX_SEED}", data.len());
        }
        let dir = self.dir.join(target);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        self.written += 1;
        Ok(())
    }
}

/// `conntrack -E -o timestamp,extended` lines: a DESTROY with the kernel's start and stop, one
/// without a family column, an UPDATE, ICMP with a zone, NAT66 port forwarding.
const CONNTRACK_LINES: &[&str] = &[
    "[1767571230.000001]\t[DESTROY] ipv4     2 udp      17 src=10.0.0.2 dst=203.0.113.1 sport=5353 dport=53 src=203.0.113.1 dst=100.64.0.1 sport=53 dport=5353 [start=Sun Jan  4 23:59:59 2026] [stop=Mon Jan  5 00:00:30 2026]",
    "[1767571230.5]\t[DESTROY] udp      17 src=10.0.0.2 dst=203.0.113.1 sport=5353 dport=53 src=203.0.113.1 dst=100.64.0.1 sport=53 dport=5353",
    "[1767571200.100000]\t [UPDATE] ipv4     2 tcp      6 60 SYN_RECV src=10.0.0.2 dst=198.51.100.7 sport=40000 dport=443 src=198.51.100.7 dst=100.64.0.1 sport=443 dport=40001",
    "[1767571200.000000]\t    [NEW] ipv4     2 icmp     1 30 src=10.0.0.2 dst=198.51.100.7 type=8 code=0 id=77 [UNREPLIED] src=198.51.100.7 dst=100.64.0.1 type=0 code=0 id=1024 zone=7 id=12345",
    "[1767571200.000000]\t    [NEW] ipv6     10 tcp      6 120 SYN_SENT src=2001:db8::7 dst=2001:db8:ffff::1 sport=50000 dport=8080 [UNREPLIED] src=fd00::2 dst=2001:db8::7 sport=80 dport=50000",
    "[1767571230.000001]\t[DESTROY] ipv4     2 tcp      6 src=10.0.0.2 dst=198.51.100.7 sport=40000 dport=443 src=198.51.100.7 dst=100.64.0.1 sport=443 dport=40001 [ASSURED] mark=0 delta-time=30 use=1 id=3735928559",
];

/// ulogd2 JSON lines: ICMP with only a `timestamp`, a line that is no conntrack event.
const ULOGD_LINES: &[&str] = &[
    r#"{"timestamp": "2026-01-05T01:00:00+0100", "dvc": "Netfilter", "orig.ip.protocol": 1, "icmp.code": 0, "icmp.type": 8, "ct.event": 1, "oob.family": 2, "src_ip": "10.0.0.2", "dest_ip": "198.51.100.7", "reply.ip.saddr.str": "198.51.100.7", "reply.ip.daddr.str": "100.64.0.1"}"#,
    r#"{"oob.prefix": "x"}"#,
];

/// ctnetlink messages as the kernel sends them: events, a dump reply and an error reply.
fn ctnetlink_datagrams() -> Vec<(&'static str, Vec<u8>)> {
    let snat = (IPS_SRC_NAT | IPS_CONFIRMED).to_be_bytes();
    // A DESTROY event of a TCP SNAT entry with every attribute natrec reads.
    let mut tcp = Builder::default();
    tcp.tuple(CTA_TUPLE_ORIG, &[10, 1, 0, 2], &[198, 51, 100, 7], 6, &ports(40000, 443))
        .tuple(CTA_TUPLE_REPLY, &[198, 51, 100, 7], &[100, 64, 0, 1], 6, &ports(443, 40001))
        .attr(CTA_ZONE, &7u16.to_be_bytes())
        .attr(CTA_STATUS, &snat)
        .attr(CTA_ID, &0xdead_beefu32.to_be_bytes())
        .attr(CTA_MARK, &5u32.to_be_bytes())
        .nest(CTA_TIMESTAMP)
        .attr(CTA_TIMESTAMP_START, &1_767_571_200_123_456_789u64.to_be_bytes())
        .attr(CTA_TIMESTAMP_STOP, &1_767_571_260_000_000_001u64.to_be_bytes())
        .end();
    // A NEW event of an IPv6 port forward (DNAT).
    let (remote, outside, inside) = (
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
        [0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    );
    let mut v6 = Builder::default();
    v6.tuple(CTA_TUPLE_ORIG, &remote, &outside, 6, &ports(50000, 8080))
        .tuple(CTA_TUPLE_REPLY, &inside, &remote, 6, &ports(80, 50000))
        .attr(CTA_STATUS, &(IPS_DST_NAT | IPS_CONFIRMED).to_be_bytes())
        .attr(CTA_TIMEOUT, &120u32.to_be_bytes());
    // A DESTROY event of an ICMP echo (id, type and code instead of ports).
    let icmp_orig = [
        (CTA_PROTO_ICMP_ID, 77u16.to_be_bytes().to_vec()),
        (CTA_PROTO_ICMP_TYPE, vec![8]),
        (CTA_PROTO_ICMP_CODE, vec![0]),
    ];
    let icmp_reply = [
        (CTA_PROTO_ICMP_ID, 1024u16.to_be_bytes().to_vec()),
        (CTA_PROTO_ICMP_TYPE, vec![0]),
        (CTA_PROTO_ICMP_CODE, vec![0]),
    ];
    let mut icmp = Builder::default();
    icmp.tuple(CTA_TUPLE_ORIG, &[10, 1, 0, 3], &[198, 51, 100, 9], 1, &icmp_orig)
        .tuple(CTA_TUPLE_REPLY, &[198, 51, 100, 9], &[100, 64, 0, 1], 1, &icmp_reply)
        .attr(CTA_STATUS, &snat);
    // A dump reply: entries flagged multipart, then DONE with the dump's result.
    let mut dump = tcp.message(IPCTNL_MSG_CT_NEW, AF_INET, NLM_F_MULTI, 9);
    dump.extend(icmp.message(IPCTNL_MSG_CT_NEW, AF_INET, NLM_F_MULTI, 9));
    dump.extend(netlink(NLMSG_DONE, NLM_F_MULTI, 9, &0i32.to_ne_bytes()));
    // An error reply: the negative errno (ENOBUFS), then the request's header.
    let mut err = (-105i32).to_ne_bytes().to_vec();
    err.extend_from_slice(
        &netlink((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET, 0, 3, &[])[..16],
    );
    vec![
        ("destroy-tcp", tcp.message(IPCTNL_MSG_CT_DELETE, AF_INET, 0, 0)),
        ("new-ipv6-dnat", v6.message(IPCTNL_MSG_CT_NEW, AF_INET6, 0, 0)),
        ("destroy-icmp", icmp.message(IPCTNL_MSG_CT_DELETE, AF_INET, 0, 0)),
        ("dump", dump),
        ("error", netlink(NLMSG_ERROR, 0, 3, &err)),
    ]
}
