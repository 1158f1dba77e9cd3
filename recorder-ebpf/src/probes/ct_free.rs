//! The `kmem_cache_free` tracepoint (BTF-typed): a conntrack entry's end, at the moment its
//! `nf_conn` goes back to the slab. Conntrack has no tracepoint of its own, and fentry on
//! `nf_conntrack_free` is refused on some kernels; this tracepoint has had the cache as its third
//! argument since Linux 6.1. Optional: where it does not load, the daemon takes ends from
//! ctnetlink DESTROY events instead.
use aya_ebpf::macros::btf_tracepoint;
use aya_ebpf::programs::BtfTracePointContext;

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn natrec_ct_free(ctx: BtfTracePointContext) -> i32 {
    crate::conntrack::freed(&ctx);
    0
}
