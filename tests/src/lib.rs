//! natrec's lab of network namespaces (gateway, inside hosts, outside servers) and the helpers
//! its integration tests, the demo and the packet-capture harness share.
//!
//! - [`lab`]: guards for what the lab creates — [`lab::Netns`] (a named network namespace;
//!   `exec`, `spawn`, `run_in` a closure on a thread inside it), [`lab::ChildGuard`],
//!   [`lab::NftTable`], [`lab::TempDir`], [`lab::veth_pair`] — and the capability check.
//! - [`gateway`]: [`gateway::GatewayLab`], a NAT gateway with inside hosts and an outside network
//!   of servers, built from a [`gateway::LabSpec`] (addressing in the module documentation).
//! - [`traffic`]: echo servers and clients (TCP, UDP, ICMP echo) made with sockets inside the
//!   namespaces; each client returns a [`traffic::FlowDone`] with its endpoints and times.
//! - [`conntrack`]: the gateway's `conntrack -L`, parsed and mapped to inside/outside/remote.
//! - [`capture`]: `tcpdump -w` in a namespace, stopped cleanly.
//! - [`recorded`]: what natrec recorded checked against the gateway's conntrack table (keys,
//!   the wait for ends, the start/end checks the capture tests share).
//! - [`http`]: a minimal HTTP client for the servers tests start on loopback.
//! - [`recorder_proc`]: `natrec record` in the gateway: start, wait for `ready`, read its JSON
//!   Lines, stop.
//!
//! Everything here needs root (namespaces, nftables, conntrack); tests call
//! [`lab::ensure_root_capabilities`], which fails loudly when something is missing. Built with
//! `NATREC_TESTS_NO_ROOT=1`, those tests are marked ignored (see `build.rs`). Every
//! namespace is named `nr-<prefix>-<pid>-<n>`; a process killed before its guards ran leaves
//! namespaces that the next lab process removes.

pub mod bench;
pub mod capture;
pub mod conntrack;
pub mod gateway;
pub mod harness;
pub mod http;
pub mod lab;
pub mod recorded;
pub mod recorder_proc;
pub mod traffic;
