//! natrec's kernel side: tc egress classifiers that report each NATed conntrack entry at its
//! start, and an end probe that reports it again as it is freed.
//!
//! The programs only observe: they always return `TC_ACT_UNSPEC` (`TCX_NEXT` under tcx), so the
//! packet goes on to whatever else is attached. Kernel struct offsets come from the read-only
//! global `OFFSETS`, which userspace fills from the running kernel's BTF before loading.
#![no_std]
#![no_main]

use aya_ebpf::macros::map;
use aya_ebpf::maps::{HashMap, LruHashMap, PerCpuArray, RingBuf};
use recorder_common::{
    DEFAULT_RINGBUF_BYTES, DEFAULT_SEEN_ENTRIES, END_SPILL_BYTES, KernelOffsets, counter,
};

mod conntrack;
mod probes;

/// Kernel struct offsets, set by userspace at load time.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets::absent();

/// 1 when the end probe runs: reported entries are then kept in [`SEEN_FREED`], else in
/// [`SEEN`]. Set by userspace at load time (read-only: the verifier drops the other branch).
#[unsafe(no_mangle)]
static SEEN_BY_PROBE: u8 = 0;

/// 1 when inside interfaces have the LAN classifier (`--lan`): port forwards are then reported
/// there at their first packet, and the WAN classifier leaves every reply-direction packet
/// alone. Set by userspace at load time (read-only).
#[unsafe(no_mangle)]
static LAN_HOOKED: u8 = 0;

/// One [`recorder_common::NatEvent`] per reported conntrack entry. Userspace sets the size.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RINGBUF_BYTES, 0);

/// Ends that found `EVENTS` full (see [`recorder_common::END_SPILL_BYTES`]).
#[map]
static END_SPILL: RingBuf = RingBuf::with_byte_size(END_SPILL_BYTES, 0);

/// Conntrack entries already reported: `nf_conn` address → its start timestamp (0 if none).
/// The timestamp tells a reused `nf_conn` slot from the entry that had it before. Without the
/// end probe nothing removes an entry as it ends, so this LRU forgets the oldest.
#[map]
static SEEN: LruHashMap<u64, u64> = LruHashMap::with_max_entries(DEFAULT_SEEN_ENTRIES, 0);

/// The same, when the end probe runs: it removes each entry as the kernel frees it (and hands
/// its start to the end event), so a plain hash map suffices. Its inserts and removals take a
/// per-CPU free list and a bucket lock; the LRU's take one lock shared by every CPU and keep
/// its lists, which costs the gateway measurably at high rates of new entries.
/// Userspace gives the map not in use one entry.
#[map]
static SEEN_FREED: HashMap<u64, u64> = HashMap::with_max_entries(DEFAULT_SEEN_ENTRIES, 0);

/// Per-CPU counters, indexed by [`recorder_common::counter`].
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *c += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
