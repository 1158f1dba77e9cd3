//! Reading a conntrack entry and reporting it: once at its start (a packet's entry, from tc) and
//! once at its end (the entry freed: from a kprobe on `nf_conntrack_free`, or from the
//! `kmem_cache_free` tracepoint).
use aya_ebpf::EbpfContext as _;
use aya_ebpf::cty::c_void;
use aya_ebpf::helpers::{
    bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, generated,
};
use aya_ebpf::maps::ring_buf::RingBufEntry;
use aya_ebpf::programs::TcContext;
use aya_log_ebpf::debug;
use recorder_common::{
    Hook, IP_CT_ESTABLISHED, IP_CT_IS_REPLY, IPS_CONFIRMED, KernelOffsets, NatEvent, NatKind,
    Tuple, classify_into, counter,
};

use crate::{END_SPILL, EVENTS, LAN_HOOKED, OFFSETS, SEEN, SEEN_BY_PROBE, SEEN_FREED, count};

/// The `kmem_cache` conntrack entries come from, learned by name at the first free from it
/// (kernel data addresses are not in kallsyms; the cache lives as long as nf_conntrack).
static mut CT_CACHE: u64 = 0;

/// Until when (`bpf_ktime_get_ns`) established packets are checked against the map of reported
/// entries after a start was lost to a full ring; 0: not since [`RECHECK_NS`] passed.
static mut RECHECK_UNTIL_NS: u64 = 0;

/// How long after a lost start established packets are checked: long enough for the entries
/// whose start was lost to send another packet, short enough that the lookups stop.
const RECHECK_NS: u64 = 10_000_000_000;

/// BPF_NOEXIST: insert only if the key is absent.
const NOEXIST: u64 = 1;

/// The slab cache name of `struct nf_conn` (`nf_conntrack_cachep`).
const CT_CACHE_NAME: &[u8] = b"nf_conntrack";

/// `TC_ACT_UNSPEC`, which is `TCX_NEXT` under tcx: let the next program decide.
const NEXT: i32 = -1;
const ABSENT: u32 = KernelOffsets::ABSENT;

/// Reads the offset global field by field (volatile: the loader rewrites the value).
macro_rules! off {
    ($field:ident) => {
        // SAFETY: a plain read of a static.
        unsafe { core::ptr::read_volatile(&OFFSETS.$field) }
    };
}

/// The map of reported entries in use: [`SEEN_FREED`] with the end probe, [`SEEN`] without.
mod seen {
    use super::*;

    #[inline(always)]
    fn by_probe() -> bool {
        // SAFETY: a plain read of a static (volatile: the loader rewrites the value).
        let v = unsafe { core::ptr::read_volatile(&raw const SEEN_BY_PROBE) };
        v != 0
    }

    #[inline(always)]
    pub fn insert(ct: u64, start: u64, flags: u64) -> Result<(), ()> {
        let r = if by_probe() {
            SEEN_FREED.insert(ct, start, flags)
        } else {
            SEEN.insert(ct, start, flags)
        };
        r.map_err(|_| ())
    }

    #[inline(always)]
    pub fn get(ct: u64) -> Option<u64> {
        // SAFETY: map values are plain u64s; the value is copied at once.
        unsafe { if by_probe() { SEEN_FREED.get(ct) } else { SEEN.get(ct) } }.copied()
    }

    #[inline(always)]
    pub fn remove(ct: u64) {
        let _ = if by_probe() { SEEN_FREED.remove(ct) } else { SEEN.remove(ct) };
    }
}

#[inline(always)]
fn read<T>(addr: u64) -> Result<T, ()> {
    // SAFETY: bpf_probe_read_kernel checks the address; a fault returns an error.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.map_err(|_| ())
}

pub fn observe(ctx: &TcContext, hook: Hook) -> i32 {
    if try_observe(ctx, hook).is_err() {
        count(counter::READ_ERRORS);
    }
    NEXT
}

#[inline(always)]
fn try_observe(ctx: &TcContext, hook: Hook) -> Result<(), ()> {
    let skb_nfct = off!(skb_nfct);
    if skb_nfct == ABSENT {
        return Err(());
    }
    let nfct: u64 = read(ctx.as_ptr() as u64 + skb_nfct as u64)?;
    let ct = nfct & !7;
    let ctinfo = (nfct & 7) as u8;
    if ct == 0 {
        return Ok(());
    }
    // The fast path, decided by `ctinfo` alone (the low bits of the skb's conntrack pointer):
    // no read of the entry, no map operation, no counter, for the bulk of the traffic.
    if ctinfo >= IP_CT_IS_REPLY && (hook == Hook::LanEgress || lan_hooked()) {
        // Replies leaving an inside interface belong to SNAT entries, reported at the WAN;
        // replies leaving the WAN belong to port forwards, which the LAN classifier reports at
        // their first packet when it runs.
        return Ok(());
    }
    if ctinfo == IP_CT_ESTABLISHED && !rechecking() {
        // Established original-direction packets never start an entry (a reused slot shows first
        // as NEW for SNAT, as a reply for DNAT), and an entry that was established before natrec
        // started comes from its seeding dump. Only after a start was lost to a full ring do
        // they take the path below for a while, so that the entry's next packet reports it.
        return Ok(());
    }
    let status: u32 = read(ct + off!(ct_status) as u64)?;
    let Some(kind) = NatKind::from_status(status) else {
        return Ok(());
    };
    if hook == Hook::LanEgress && kind == NatKind::Snat {
        // Inside interfaces are hooked for port forwards; SNAT entries are reported at the WAN.
        return Ok(());
    }
    let start = ct_start(ct)?;
    // One map operation for a new entry: the insert tells whether it was there.
    if seen::insert(ct, start, NOEXIST).is_err() {
        if seen::get(ct) == Some(start) {
            return Ok(());
        }
        // A reused slot (its old entry was never seen freed), or the key went in between: mark
        // it with this entry's start. The update fails when the map is full (with the end
        // probe: more live NATed entries than it holds); the entry is then reported again on
        // its next packets (userspace drops the duplicates) and its end carries no start
        // (userspace pairs it with its start by the tuple).
        if seen::insert(ct, start, 0).is_err() {
            count(counter::SEEN_FULL);
        }
    }

    let Some(entry) = EVENTS.reserve::<NatEvent>(0) else {
        count(counter::RINGBUF_FULL);
        // Not marked as seen: the entry's next packet tries again, established or not.
        seen::remove(ct);
        // SAFETY: every CPU that loses a start writes a time in the future; any of them will do.
        unsafe {
            core::ptr::write_volatile(&raw mut RECHECK_UNTIL_NS, bpf_ktime_get_ns() + RECHECK_NS);
        }
        return Ok(());
    };
    // SAFETY: ctx.skb.skb is the program's context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let tail = Tail { ifindex, ctinfo, start_known: false, late_jiffies: 0 };
    emit(entry, hook, ct, kind, status, start, tail)?;
    // Off unless userspace runs with debug logging (AYA_LOG_LEVEL is set at load time).
    debug!(ctx, "natrec: reported conntrack entry {:x} kind {} ctinfo {}", ct, kind as u8, ctinfo);
    Ok(())
}

/// Whether the LAN classifier runs (see [`LAN_HOOKED`]).
#[inline(always)]
fn lan_hooked() -> bool {
    // SAFETY: a plain read of a static (volatile: the loader rewrites the value).
    unsafe { core::ptr::read_volatile(&raw const LAN_HOOKED) != 0 }
}

/// Whether established packets are checked (a start was lost to a full ring lately).
#[inline(always)]
fn rechecking() -> bool {
    // SAFETY: plain reads and writes of a static; races only make a CPU check a little longer.
    unsafe {
        let until = core::ptr::read_volatile(&raw const RECHECK_UNTIL_NS);
        if until == 0 {
            return false;
        }
        if bpf_ktime_get_ns() < until {
            return true;
        }
        core::ptr::write_volatile(&raw mut RECHECK_UNTIL_NS, 0);
        false
    }
}

/// The fields of an event that depend on where it was observed.
struct Tail {
    ifindex: u32,
    ctinfo: u8,
    start_known: bool,
    late_jiffies: u32,
}

/// Fills the reserved record `entry` and submits it, counted; discards it when the entry could
/// not be read.
#[inline(always)]
fn emit(
    mut entry: RingBufEntry<NatEvent>,
    hook: Hook,
    ct: u64,
    kind: NatKind,
    status: u32,
    start: u64,
    tail: Tail,
) -> Result<(), ()> {
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at the reserved, exclusively owned ring-buffer record.
    let filled = unsafe {
        fill(ev, hook, ct, kind, status, start).map(|()| {
            (*ev).ifindex = tail.ifindex;
            (*ev).ctinfo = tail.ctinfo;
            (*ev).start_known = u8::from(tail.start_known);
            (*ev).late_jiffies = tail.late_jiffies;
        })
    };
    if filled.is_err() {
        entry.discard(0);
        return Err(());
    }
    entry.submit(0);
    count(counter::EVENTS);
    Ok(())
}

/// Fills the reserved record's entry fields in place (the BPF stack is too small to build it
/// there); [`emit`] sets the others.
///
/// # Safety
/// `ev` must point at a writable `NatEvent`.
#[inline(always)]
unsafe fn fill(
    ev: *mut NatEvent,
    hook: Hook,
    ct: u64,
    kind: NatKind,
    status: u32,
    start: u64,
) -> Result<(), ()> {
    let orig_at = ct + off!(ct_tuple_orig) as u64;
    let reply_at = ct + off!(ct_tuple_reply) as u64;
    let mut orig = Tuple::default();
    let mut reply = Tuple::default();
    read_tuple(&mut orig, orig_at)?;
    read_tuple(&mut reply, reply_at)?;
    let family: u16 = read(orig_at + off!(tuple_src_l3num) as u64)?;
    let proto: u8 = read(orig_at + off!(tuple_dst_protonum) as u64)?;
    let zone_off = off!(ct_zone_id);
    let zone: u16 = if zone_off == ABSENT { 0 } else { read(ct + zone_off as u64)? };
    // SAFETY: the caller hands us a writable record.
    unsafe {
        classify_into(kind, proto, &orig, &reply, &mut (*ev).ep);
        (*ev).ktime_ns = bpf_ktime_get_ns();
        (*ev).ct_start_ns = start;
        (*ev).ct_id = ct;
        (*ev).zone = zone;
        (*ev).family = family as u8;
        (*ev).proto = proto;
        (*ev).ct_status = status;
        (*ev).kind = kind as u8;
        (*ev).hook = hook as u8;
        (*ev)._pad = [0; 4];
    }
    Ok(())
}

/// The entry's start timestamp (`nf_conn_tstamp.start`), or 0 when it has none.
#[inline(always)]
fn ct_start(ct: u64) -> Result<u64, ()> {
    let (ext_off, offsets_off, id, start_off) =
        (off!(ct_ext), off!(ext_offset), off!(ext_tstamp_id), off!(tstamp_start));
    if ext_off == ABSENT || offsets_off == ABSENT || id == ABSENT || start_off == ABSENT {
        return Ok(0);
    }
    let ext: u64 = read(ct + ext_off as u64)?;
    if ext == 0 {
        return Ok(0);
    }
    let at: u8 = read(ext + offsets_off as u64 + id as u64)?;
    if at == 0 {
        return Ok(0);
    }
    read(ext + at as u64 + start_off as u64)
}

/// Reads one conntrack tuple's addresses and ports straight into `t`.
#[inline(always)]
fn read_tuple(t: &mut Tuple, at: u64) -> Result<(), ()> {
    read_into(&mut t.src, at + off!(tuple_src_u3) as u64)?;
    read_into(&mut t.dst, at + off!(tuple_dst_u3) as u64)?;
    read_into(&mut t.src_port, at + off!(tuple_src_u) as u64)?;
    read_into(&mut t.dst_port, at + off!(tuple_dst_u) as u64)
}

/// Reads `size_of::<T>()` bytes of kernel memory at `addr` into `dst`, without a stack copy.
#[inline(always)]
fn read_into<T>(dst: &mut T, addr: u64) -> Result<(), ()> {
    // SAFETY: `dst` is valid for writes of size_of::<T>() bytes; the helper checks `addr`.
    let ret = unsafe {
        generated::bpf_probe_read_kernel(
            (dst as *mut T).cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
            addr as *const c_void,
        )
    };
    if ret < 0 { Err(()) } else { Ok(()) }
}

/// `kmem_cache_free(s, ptr)`: when `s` is conntrack's cache, `ptr` is an entry at the end of its
/// life (after `nf_ct_delete` and the last reference; its extensions are already freed, its
/// status, tuples and timeout are intact). A confirmed NATed entry of the watched namespace is
/// reported as an end.
pub fn freed(cache: u64, ptr: u64) {
    // SAFETY: a plain read of a static this program alone writes.
    let known = unsafe { core::ptr::read_volatile(&raw const CT_CACHE) };
    if known != cache {
        if known != 0 || !is_ct_cache(cache) {
            return;
        }
        // SAFETY: every CPU that learns it writes the same value.
        unsafe { core::ptr::write_volatile(&raw mut CT_CACHE, cache) };
    }
    count(counter::CT_FREES);
    if try_freed(ptr).is_err() {
        count(counter::READ_ERRORS);
    }
}

/// `nf_conntrack_free(ct)`: an entry at its last reference (see `probes/ct_free_kprobe.rs`).
pub fn destroyed(ct: u64) {
    count(counter::CT_FREES);
    if try_freed(ct).is_err() {
        count(counter::READ_ERRORS);
    }
}

/// Whether the cache at `cache` is named `nf_conntrack` (read only until it is found).
#[inline(always)]
fn is_ct_cache(cache: u64) -> bool {
    let name_off = off!(cache_name);
    if name_off == ABSENT || cache == 0 {
        return false;
    }
    let Ok(name) = read::<u64>(cache + name_off as u64) else {
        return false;
    };
    let mut buf = [0u8; 16];
    // SAFETY: the helper checks the address and writes at most `buf.len()` bytes.
    match unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut buf) } {
        Ok(s) => s == CT_CACHE_NAME,
        Err(_) => false,
    }
}

#[inline(always)]
fn try_freed(ct: u64) -> Result<(), ()> {
    if ct == 0 {
        return Ok(());
    }
    let status: u32 = read(ct + off!(ct_status) as u64)?;
    let Some(kind) = NatKind::from_status(status) else {
        return Ok(());
    };
    if status & IPS_CONFIRMED == 0 {
        // Never in the table (dropped before confirmation): not a translation.
        return Ok(());
    }
    let want = off!(netns_inum);
    let (net_off, inum_off) = (off!(ct_net), off!(net_inum));
    if want != 0 && net_off != ABSENT && inum_off != ABSENT {
        let net: u64 = read(ct + net_off as u64)?;
        let inum: u32 = read(net + inum_off as u64)?;
        if inum != want {
            return Ok(());
        }
    }
    let seen = seen::get(ct);
    if seen.is_some() {
        // The slot may be reused at once: its next entry must be reported afresh.
        seen::remove(ct);
    }
    let timeout_off = off!(ct_timeout);
    let late = if timeout_off == ABSENT {
        0
    } else {
        let timeout: u32 = read(ct + timeout_off as u64)?;
        // SAFETY: bpf_jiffies64 has no preconditions.
        let now = unsafe { generated::bpf_jiffies64() } as u32;
        // As the kernel's nf_ct_expires: the wrapped difference, positive once expired.
        let late = now.wrapping_sub(timeout) as i32;
        if late > 0 { late as u32 } else { 0 }
    };

    // An end whose start was lost too would leave no record: it spills rather than drops.
    let entry = match EVENTS.reserve::<NatEvent>(0) {
        Some(e) => e,
        None => match END_SPILL.reserve::<NatEvent>(0) {
            Some(e) => {
                count(counter::ENDS_SPILLED);
                e
            }
            None => {
                count(counter::RINGBUF_FULL);
                return Ok(());
            }
        },
    };
    let tail = Tail { ifindex: 0, ctinfo: 0, start_known: seen.is_some(), late_jiffies: late };
    emit(entry, Hook::CtFree, ct, kind, status, seen.unwrap_or(0), tail)?;
    count(counter::END_EVENTS);
    Ok(())
}
