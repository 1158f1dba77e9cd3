//! tc egress of an inside (LAN) interface: an inbound port-forward's packets leave here after
//! DNAT, so a forward is reported at its first packet even when the inside server never answers.
//! (At WAN ingress a packet has no conntrack entry yet: conntrack runs in PREROUTING.)
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use recorder_common::Hook;

#[classifier]
pub fn natrec_lan_egress(ctx: TcContext) -> i32 {
    crate::conntrack::observe(&ctx, Hook::LanEgress)
}
