//! A kprobe on `nf_conntrack_free`: a conntrack entry's end, once per entry, as the entry goes
//! back to the slab at its last reference (its status, tuples, timeout and extensions intact).
//!
//! The preferred end probe: it runs once per conntrack entry, where the `kmem_cache_free`
//! tracepoint ([`super::ct_free`]) runs at every slab free of the machine, every forwarded
//! packet's skb among them. fentry would be cheaper still, but where conntrack is a module (as in
//! Debian's kernels) its functions' BTF is the module's, which this aya cannot attach to; and
//! `nf_conntrack_destroy`, in the kernel proper, misses the entries whose last reference the
//! conntrack module itself drops. Kernels without kprobes (this project's CI machine) take the
//! tracepoint: the daemon tries this one first.
use aya_ebpf::macros::kprobe;
use aya_ebpf::programs::ProbeContext;

#[kprobe]
pub fn natrec_ct_free_kprobe(ctx: ProbeContext) -> u32 {
    // nf_conntrack_free(struct nf_conn *ct)
    if let Some(ct) = ctx.arg::<u64>(0) {
        crate::conntrack::destroyed(ct);
    }
    0
}
