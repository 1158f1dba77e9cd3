//! A hash table for the recorder's maps of open translations, whose slots can be prefetched.
//!
//! The tracker and the store writer each keep every open translation in a map: hundreds of
//! thousands of entries on a busy gateway, tens of megabytes. Nearly every lookup of an ending
//! translation then misses the CPU caches twice (the probe, then the key), and at high rates
//! those stalls are a large share of natrec's CPU time (BENCHMARKS.md has the profile). std's
//! `HashMap` cannot say where a key lives before it is looked up. This table can: the caller
//! announces the keys of the next few reports ([`OpenTable::prefetch`]), their memory loads
//! overlap, and each lookup then finds its slot in cache.
//!
//! Layout: linear probing over a power-of-two array of slots, at most 5/8 full, each slot
//! holding the key's hash (with the top bit set, so that it is never zero and an empty slot,
//! `None`, takes no more room than a full one), the key and the value. Removal shifts the
//! entries that follow back into the hole (no tombstones), so lookups stay short however many
//! entries come and go.
//!
//! The hash is foldhash with random per-table seeds: keys hold addresses and ports that outside
//! hosts choose, and a predictable hash would let them build long probe chains.
//!
//! A big slot array is asked to be backed by transparent huge pages (`MADV_HUGEPAGE`, where the
//! kernel's `transparent_hugepage/enabled` is `madvise`, its usual default): with 4 KiB pages,
//! nearly every lookup of a table of tens of megabytes also misses the TLB, and a prefetch then
//! waits for the page walk (two-dimensional on a virtual machine) before its load can start, and
//! the prefetch buys nothing.

use std::hash::{BuildHasher, Hash};
use std::num::NonZeroU64;

/// Slots are in use at most 5/8 of them (`len * DEN <= slots * NUM`).
const NUM: usize = 5;
const DEN: usize = 8;
/// The first allocation.
const MIN_SLOTS: usize = 16;
/// Slots from a key's home that [`OpenTable::prefetch`] brings into cache: at 5/8 full a
/// removal reads about four (to the end of the home slot's run), a lookup about two.
const PROBE_AHEAD: usize = 4;
const CACHE_LINE: usize = 64;
/// Set in every tag, which is therefore never zero.
const OCCUPIED: u64 = 1 << 63;

#[derive(Clone, Copy, Debug)]
struct Slot<K, V> {
    /// The key's hash with [`OCCUPIED`] set.
    tag: NonZeroU64,
    key: K,
    val: V,
}

impl<K, V> Slot<K, V> {
    fn home(&self, mask: usize) -> usize {
        self.tag.get() as usize & mask
    }
}

/// A map of `Copy` keys to `Copy` values; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct OpenTable<K, V, S = foldhash::fast::RandomState> {
    slots: Vec<Option<Slot<K, V>>>,
    len: usize,
    hasher: S,
}

impl<K, V, S: Default> Default for OpenTable<K, V, S> {
    fn default() -> Self {
        Self { slots: Vec::new(), len: 0, hasher: S::default() }
    }
}

impl<K, V, S> OpenTable<K, V, S>
where
    K: Copy + Eq + Hash,
    V: Copy,
    S: BuildHasher,
{
    pub fn len(&self) -> usize {
        self.len
    }

    fn tag(&self, k: &K) -> NonZeroU64 {
        NonZeroU64::new(self.hasher.hash_one(k) | OCCUPIED).unwrap_or(NonZeroU64::MAX)
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Asks the CPU to bring the slots where a lookup of `k` begins into cache, so that a lookup
    /// (or a removal) a little later does not wait for memory. A hint only: it changes nothing.
    pub fn prefetch(&self, k: &K) {
        if self.slots.is_empty() {
            return;
        }
        let i = self.tag(k).get() as usize & self.mask();
        let first = std::ptr::from_ref(&self.slots[i]).cast::<u8>();
        // The home slot and those after it that a lookup, and a removal's backward shift, go on
        // to read: PROBE_AHEAD slots, whatever cache lines they straddle. (Past the array's end
        // the hint is wasted, never harmful.)
        let into_line = first as usize % CACHE_LINE;
        let line = first.wrapping_sub(into_line);
        for off in
            (0..into_line + PROBE_AHEAD * size_of::<Option<Slot<K, V>>>()).step_by(CACHE_LINE)
        {
            prefetch(line.wrapping_add(off));
        }
    }

    /// The index of `k`'s slot.
    fn find(&self, tag: NonZeroU64, k: &K) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = tag.get() as usize & mask;
        loop {
            let s = self.slots[i].as_ref()?;
            if s.tag == tag && s.key == *k {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn slot_mut(&mut self, k: &K) -> Option<&mut Slot<K, V>> {
        let i = self.find(self.tag(k), k)?;
        self.slots[i].as_mut()
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        let i = self.find(self.tag(k), k)?;
        self.slots[i].as_ref().map(|s| &s.val)
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.slot_mut(k).map(|s| &mut s.val)
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        if let Some(s) = self.slot_mut(&k) {
            return Some(std::mem::replace(&mut s.val, v));
        }
        let tag = self.tag(&k);
        if (self.len + 1) * DEN > self.slots.len() * NUM {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
        }
        self.place(Slot { tag, key: k, val: v });
        self.len += 1;
        None
    }

    /// Puts an entry known to be absent into the first free slot of its probe sequence.
    fn place(&mut self, slot: Slot<K, V>) {
        let mask = self.mask();
        let mut i = slot.home(mask);
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Some(slot);
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, empty_slots(slots));
        for s in old.into_iter().flatten() {
            self.place(s);
        }
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let i = self.find(self.tag(k), k)?;
        let v = self.slots[i].as_ref().map(|s| s.val);
        self.delete_at(i);
        v
    }

    /// Empties slot `hole` and shifts back the entries after it whose probe sequence passes
    /// through it, so that every entry stays reachable from its home slot without a gap.
    fn delete_at(&mut self, mut hole: usize) {
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some(s) = self.slots[j] else { break };
            // The entry at `j` may fill the hole when the hole lies between its home slot and
            // `j` (cyclically): it is then at least as far from home as from the hole.
            if (j.wrapping_sub(s.home(mask)) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = Some(s);
                hole = j;
            }
        }
        self.slots[hole] = None;
        self.len -= 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.slots.iter().flatten().map(|s| (&s.key, &s.val))
    }

    /// Keeps only the entries `keep` accepts (rebuilds the table: meant for rare clean-ups).
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let n = self.slots.len();
        let old = std::mem::replace(&mut self.slots, empty_slots(n));
        self.len = 0;
        for s in old.into_iter().flatten().filter(|s| keep(&s.key, &s.val)) {
            self.place(s);
            self.len += 1;
        }
    }

    /// Removes every entry; keeps the allocation.
    pub fn clear(&mut self) {
        self.slots.fill(None);
        self.len = 0;
    }
}

/// Slot arrays of at least this many bytes ask for huge pages.
const HUGE_FROM: usize = 4 << 20;
/// The size of a transparent huge page on x86_64 and aarch64 with 4 KiB pages.
const HUGE_PAGE: usize = 2 << 20;

/// `n` empty slots. A big array is marked for huge pages before its memory is first written, so
/// that its pages are faulted in as huge pages (see the module docs).
fn empty_slots<T: Clone>(n: usize) -> Vec<Option<T>> {
    let mut v: Vec<Option<T>> = Vec::with_capacity(n);
    let bytes = n * size_of::<Option<T>>();
    if bytes >= HUGE_FROM {
        advise_huge(v.as_ptr().cast(), bytes);
    }
    v.resize(n, None);
    v
}

/// Marks the whole huge pages inside `[p, p + len)` with `MADV_HUGEPAGE`. A hint: where the
/// kernel has no transparent huge pages, or refuses, the memory simply keeps small pages.
#[cfg(target_os = "linux")]
fn advise_huge(p: *const u8, len: usize) {
    let start = (p as usize).next_multiple_of(HUGE_PAGE);
    let end = (p as usize + len) & !(HUGE_PAGE - 1);
    if end > start {
        // SAFETY: the range lies inside an allocation this table owns; MADV_HUGEPAGE changes how
        // its pages are backed, never their contents.
        let _ =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_: *const u8, _: usize) {}

#[cfg(target_arch = "x86_64")]
fn prefetch(p: *const u8) {
    // SAFETY: a prefetch is a hint: it neither faults nor reads into the program's state, whatever
    // the address.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast()) }
}

/// Elsewhere (aarch64's prefetch intrinsic is not stable yet) the lookups simply wait.
#[cfg(not(target_arch = "x86_64"))]
fn prefetch(_: *const u8) {}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Every key hashes alike: every entry lands in one probe chain, which wraps around the
    /// array's end.
    #[derive(Clone, Copy, Default)]
    struct Collide;
    impl BuildHasher for Collide {
        type Hasher = ConstHasher;
        fn build_hasher(&self) -> ConstHasher {
            ConstHasher
        }
    }
    struct ConstHasher;
    impl std::hash::Hasher for ConstHasher {
        fn finish(&self) -> u64 {
            13
        }
        fn write(&mut self, _: &[u8]) {}
    }

    /// A few buckets of hash values: chains that overlap and wrap.
    #[derive(Clone, Copy, Default)]
    struct Few;
    impl BuildHasher for Few {
        type Hasher = FewHasher;
        fn build_hasher(&self) -> FewHasher {
            FewHasher(0)
        }
    }
    struct FewHasher(u64);
    impl std::hash::Hasher for FewHasher {
        fn finish(&self) -> u64 {
            // Homes at the array's end, so that chains wrap.
            (self.0 % 5).wrapping_sub(3)
        }
        fn write(&mut self, b: &[u8]) {
            for &x in b {
                self.0 = self.0.wrapping_mul(31).wrapping_add(u64::from(x));
            }
        }
    }

    /// Random inserts, replacements and removals, checked against std's map after each step.
    fn against_std<S: BuildHasher + Default>(seed: u64, keys: u64, steps: usize) {
        let mut t: OpenTable<u64, u64, S> = OpenTable::default();
        let mut m: HashMap<u64, u64> = HashMap::new();
        let mut rng = crate::rng::Rng::new(seed);
        for step in 0..steps {
            let r = rng.next_u64();
            let k = r % keys;
            match r >> 60 {
                0..=6 => assert_eq!(t.insert(k, r), m.insert(k, r), "insert {k} at step {step}"),
                7..=13 => assert_eq!(t.remove(&k), m.remove(&k), "remove {k} at step {step}"),
                _ => {
                    if let (Some(a), Some(b)) = (t.get_mut(&k), m.get_mut(&k)) {
                        *a += 1;
                        *b += 1;
                    }
                }
            }
            assert_eq!(t.len(), m.len());
            t.prefetch(&k);
            let q = rng.next_u64() % keys;
            assert_eq!(t.get(&q).is_some(), m.contains_key(&q), "get {q} at step {step}");
        }
        let mut all: Vec<(u64, u64)> = t.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable();
        let mut want: Vec<(u64, u64)> = m.into_iter().collect();
        want.sort_unstable();
        assert_eq!(all, want);
    }

    #[test]
    fn matches_std_with_a_random_hash() {
        against_std::<foldhash::fast::RandomState>(0x9e37_79b9_7f4a_7c15, 5_000, 200_000);
    }

    #[test]
    fn matches_std_when_every_key_collides() {
        against_std::<Collide>(7, 40, 20_000);
    }

    #[test]
    fn matches_std_with_overlapping_wrapping_chains() {
        against_std::<Few>(11, 300, 50_000);
    }

    #[test]
    fn retain_and_clear() {
        let mut t: OpenTable<u32, u32> = OpenTable::default();
        for k in 0..1000 {
            t.insert(k, k * 2);
        }
        t.retain(|k, _| k % 3 == 0);
        assert_eq!(t.len(), 334);
        assert!((0..1000).all(|k| t.get(&k).is_some() == (k % 3 == 0)));
        assert_eq!(t.get(&999), Some(&1998));
        let slots = t.slots.len();
        t.clear();
        assert!(t.len() == 0 && t.iter().next().is_none() && t.get(&0).is_none());
        assert_eq!(t.slots.len(), slots);
    }

    /// A big slot array is marked for huge pages (`hg` in its mapping's VmFlags), where the
    /// kernel has transparent huge pages at all.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_big_slot_array_asks_for_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            eprintln!("this kernel has no transparent huge pages: nothing to check");
            return;
        }
        let v: Vec<Option<Slot<u64, u64>>> =
            empty_slots(HUGE_FROM * 2 / size_of::<Option<Slot<u64, u64>>>());
        let mid = v.as_ptr() as usize + HUGE_FROM;
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
        let mut inside = false;
        let mut flags = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&mid);
            } else if inside && let Some(f) = line.strip_prefix("VmFlags:") {
                flags = Some(f.to_owned());
            }
        }
        let flags = flags.expect("the slot array's mapping in /proc/self/smaps");
        assert!(flags.split_whitespace().any(|f| f == "hg"), "VmFlags:{flags}");
        assert!(v.iter().all(Option::is_none));
    }

    #[test]
    fn an_empty_slot_takes_no_room() {
        assert_eq!(size_of::<Option<Slot<u64, u64>>>(), size_of::<Slot<u64, u64>>());
    }
}
