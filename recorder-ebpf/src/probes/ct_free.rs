//! The `kmem_cache_free` tracepoint, as a raw tracepoint: a conntrack entry's end, at the moment
//! its `nf_conn` goes back to the slab. Conntrack has no tracepoint of its own, and fentry on
//! `nf_conntrack_free` is refused on some kernels. The tracepoint has passed the cache as its
//! third argument since Linux 6.1 (the daemon checks that in the kernel's BTF before loading).
//!
//! A raw tracepoint rather than a BTF-typed one: the verifier of Debian's 6.1 and 6.12 refuses
//! a typed read of the freed pointer (a `const void *`, "arg1 type UNKNOWN is not a struct"),
//! while raw arguments are plain u64s everywhere. Both kinds cost the same per run.
//!
//! Optional: where it does not load, the daemon takes ends from ctnetlink DESTROY events instead.
use aya_ebpf::macros::raw_tracepoint;
use aya_ebpf::programs::RawTracePointContext;

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn natrec_ct_free(ctx: RawTracePointContext) -> i32 {
    // kmem_cache_free(call_site, ptr, s)
    crate::conntrack::freed(ctx.arg::<u64>(2), ctx.arg::<u64>(1));
    0
}
