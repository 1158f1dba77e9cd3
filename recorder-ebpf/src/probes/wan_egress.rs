//! tc egress of a WAN interface: packets leave after POSTROUTING, so SNAT is done and the
//! conntrack entry is confirmed. Original-direction packets of SNAT entries and reply-direction
//! packets of DNAT (port forward) entries pass here.
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use recorder_common::Hook;

#[classifier]
pub fn natrec_wan_egress(ctx: TcContext) -> i32 {
    crate::conntrack::observe(&ctx, Hook::WanEgress)
}
