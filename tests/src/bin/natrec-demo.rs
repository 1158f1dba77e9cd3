//! `cargo xtask demo`: natrec's main job on a self-contained lab.
//!
//! Builds a dual-stack NAT gateway in network namespaces (three inside hosts, masquerade through
//! `wan0` for IPv4 and IPv6, a port forward, an outside network of servers), runs `natrec
//! record` in the gateway, makes TCP, UDP and ICMP traffic over both families (two hosts with the
//! same source port to the same server, so the gateway rewrites one), ends the flows, shows what
//! natrec captured and what `natrec query` answers for an IPv4 and an IPv6 outside endpoint, and
//! removes everything it created.
//!
//! Usage: `natrec-demo PATH-TO-NATREC` (xtask passes it).

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context as _, Result};
use natrec_tests::conntrack::conntrack_flush;
use natrec_tests::gateway::{DNAT_TCP_INSIDE_PORT, DNAT_TCP_PORT, Family, GatewayLab, LabSpec};
use natrec_tests::lab::{TempDir, ensure_root_capabilities};
use natrec_tests::recorder_proc::NatrecRecord;
use natrec_tests::traffic::{EchoServer, FlowDone, ping, tcp_exchange, udp_exchange};
use recorder::model::FlowEvent;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natrec-demo: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    let natrec = std::env::args().nth(1).context("usage: natrec-demo PATH-TO-NATREC")?;
    natrec_tests::recorder_proc::use_natrec_bin(std::path::Path::new(&natrec));
    ensure_root_capabilities().context("the demo cannot run here")?;

    println!(
        "== building the lab: 3 dual-stack inside hosts, a gateway masquerading IPv4 and IPv6 with a port forward, outside servers"
    );
    let lab =
        GatewayLab::build(LabSpec { prefix: "demo".into(), ipv6: true, ..LabSpec::default() })?;
    let servers = lab.servers();
    let web = SocketAddr::new(IpAddr::V4(servers[0]), 443);
    let dns = SocketAddr::new(IpAddr::V4(servers[1 % servers.len()]), 53);
    let _web = EchoServer::tcp(lab.outside(), web)?;
    let _dns = EchoServer::udp(lab.outside(), dns)?;
    let web6 = SocketAddr::new(IpAddr::V6(lab.servers6()[0]), 443);
    let _web6 = EchoServer::tcp(lab.outside(), web6)?;
    let host1 = &lab.hosts()[0];
    let _forwarded = EchoServer::tcp(
        host1.ns(),
        SocketAddr::new(IpAddr::V4(host1.addr()), DNAT_TCP_INSIDE_PORT),
    )?;
    for (i, h) in lab.hosts().iter().enumerate() {
        let v6 = h.addr6().context("a dual-stack lab")?;
        println!("   inside host {}: {} and {v6} (namespace {})", i + 1, h.addr(), h.ns().name());
    }
    println!(
        "   gateway {} : WAN {} ({} and {}), outside servers {:?} and {:?}",
        lab.gateway().name(),
        lab.wan_if(),
        lab.wan_addr(),
        lab.wan_addr6().context("a dual-stack lab")?,
        servers,
        lab.servers6(),
    );

    let work = TempDir::new("natrec-demo")?;
    let jsonl = work.path().join("events.jsonl");
    let store = work.path().join("segments");
    let store_arg = store.to_str().context("temp path is not UTF-8")?;
    println!("\n== starting natrec record in the gateway (segments in {})", store.display());
    let rec = NatrecRecord::start(&lab, &jsonl, &["--dir", store_arg])?;

    println!("\n== traffic");
    let mut flows: Vec<FlowDone> = Vec::new();
    let any = |ip: IpAddr| SocketAddr::new(ip, 0);
    for h in lab.hosts() {
        flows.push(tcp_exchange(h.ns(), any(h.addr_of(Family::V4)), web, 3)?);
        flows.push(udp_exchange(h.ns(), any(h.addr_of(Family::V4)), dns, 2)?);
        flows.push(tcp_exchange(h.ns(), any(h.addr_of(Family::V6)), web6, 2)?);
    }
    // Two hosts, one source port, one server: the gateway must rewrite one of them.
    for h in &lab.hosts()[1..3] {
        flows.push(tcp_exchange(h.ns(), SocketAddr::new(IpAddr::V4(h.addr()), 40000), web, 2)?);
    }
    flows.push(ping(lab.hosts()[2].ns(), lab.hosts()[2].addr(), 777, servers[0], 2)?);
    // From the outside, through the port forward to inside host 1.
    let forward = SocketAddr::new(IpAddr::V4(lab.wan_addr()), DNAT_TCP_PORT);
    flows.push(tcp_exchange(lab.outside(), any(IpAddr::V4(servers[0])), forward, 2)?);
    for f in &flows {
        println!("   {:<5} {} -> {}", f.proto.to_string(), f.local, f.remote);
    }

    println!(
        "\n== ending the flows (conntrack -F in the gateway) and waiting for natrec's end events"
    );
    std::thread::sleep(Duration::from_millis(300));
    conntrack_flush(lab.gateway())?;
    let (events, complete) = rec.wait_for(Duration::from_secs(20), |evs| {
        let starts = evs.iter().filter(|e| matches!(e, FlowEvent::Start(_))).count();
        let ends = evs.iter().filter(|e| matches!(e, FlowEvent::End(_))).count();
        starts >= flows.len() && ends >= starts
    })?;
    if !complete {
        eprintln!("natrec-demo: not every flow has its end event yet ({} events)", events.len());
    }
    let (events, log) = rec.stop()?;
    let ends: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            FlowEvent::End(t) => Some(t),
            FlowEvent::Start(_) => None,
        })
        .collect();

    println!("\n== natrec captured {} translations:", ends.len());
    println!(
        "   {:<5} {:<6} {:<22} {:<22} {:<22} {:<12} {:>9}",
        "kind", "proto", "inside", "outside", "remote", "start (UTC)", "seconds"
    );
    for t in &ends {
        let secs =
            t.end.map(|e| (e - t.start).get_milliseconds() as f64 / 1000.0).unwrap_or(f64::NAN);
        println!(
            "   {:<5} {:<6} {:<22} {:<22} {:<22} {:<12} {:>9.3}",
            t.kind.to_string(),
            t.proto.to_string(),
            t.inside.to_string(),
            t.outside.to_string(),
            t.remote.to_string(),
            t.start.strftime("%H:%M:%S%.3f").to_string(),
            secs
        );
    }
    let summary = log.lines().filter(|l| l.contains("stopped")).collect::<Vec<_>>().join("\n");
    println!("\n== natrec's own summary:\n{summary}");

    // Ask the question an abuse report asks, about the rewritten flow: first with the outside
    // address and port only, then as a report without a port would (ambiguous, and said so);
    // then about an IPv6 flow, with the remote the report names.
    let query = |args: &[&str]| -> Result<()> {
        println!("\n== natrec query {}", args.join(" "));
        let status = Command::new(&natrec)
            .args(["query", "--dir", store_arg])
            .args(args)
            .status()
            .context("running natrec query")?;
        println!("   (exit status {})", status.code().unwrap_or(-1));
        Ok(())
    };
    if let Some(t) = ends.iter().find(|t| t.inside.port() == 40000 && t.outside.port() != 40000) {
        let at = t.start.to_string();
        for outside in [t.outside.to_string(), t.outside.ip().to_string()] {
            query(&["--outside", &outside, "--at", &at])?;
        }
    }
    if let Some(t) = ends.iter().find(|t| t.outside.is_ipv6()) {
        let (outside, remote, at) =
            (t.outside.to_string(), t.remote.to_string(), t.start.to_string());
        query(&["--outside", &outside, "--remote", &remote, "--at", &at])?;
    }
    println!("\n== natrec verify {}", store.display());
    let _ = Command::new(&natrec)
        .args(["verify", store_arg])
        .status()
        .context("running natrec verify")?;

    println!("\n== tearing the lab down");
    drop(lab);
    println!("done.");
    Ok(())
}
