//! The block format: what a block holds, its header, its columns and dictionaries, the escape
//! codes that encoding and decoding share, and the varints and cursor every column is read with.

/// What a block holds (its header's first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockKind {
    /// Events as they came, in an `.open` segment: full records and end references.
    Live = 0,
    /// Translations still open when the segment began, carried from the one before.
    Checkpoint = 1,
    /// New translations of a sealed segment, of one duration class.
    Sealed = 2,
}

impl BlockKind {
    pub(crate) fn from_code(k: u8) -> Result<BlockKind, String> {
        match k {
            0 => Ok(BlockKind::Live),
            1 => Ok(BlockKind::Checkpoint),
            2 => Ok(BlockKind::Sealed),
            other => Err(format!("unknown block kind {other}")),
        }
    }

    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

/// The duration class of checkpoint (carried) groups and of live blocks.
pub(crate) const CLASS_CARRIED: u8 = 4;
pub(crate) const CLASS_LIVE: u8 = 255;

/// The columns of a block, in their order in the block (docs/FORMAT.md has each one's layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Column {
    /// Kind (u8 per record).
    Kind = 0,
    /// The service table: (protocol, remote port) pairs.
    Services = 1,
    /// Flags (u8 per record).
    Flags = 2,
    /// Bits: 1 has an end, 2 carried.
    Bits = 3,
    /// Zone (uvarint per record).
    Zone = 4,
    /// Start, delta-coded.
    Start = 5,
    /// Durations, in streams by service.
    Duration = 6,
    /// Inside address: dictionary index, four byte planes.
    InsideIndex = 7,
    /// Inside port, two byte planes.
    InsidePort = 8,
    /// Outside address: index relative to the previous of the same inside.
    OutsideIndex = 9,
    /// Outside port minus inside port, two byte planes.
    PortDelta = 10,
    /// Remote address: index byte, escapes in three planes.
    RemoteIndex = 11,
    /// Service code (u8 per record).
    ServiceCode = 12,
    /// Inside dictionary.
    InsideDict = 13,
    /// Outside dictionary.
    OutsideDict = 14,
    /// Remote dictionary.
    RemoteDict = 15,
    /// End reference: ordinal distance.
    RefDistance = 16,
    /// End reference: end, delta-coded.
    RefEnd = 17,
    /// End reference: flags.
    RefFlags = 18,
    /// Escaped services: protocols, then remote ports.
    EscapedServices = 19,
}

/// How many columns a block has.
pub(super) const N_COLS: usize = 20;

impl std::ops::Index<Column> for Vec<Vec<u8>> {
    type Output = Vec<u8>;
    fn index(&self, c: Column) -> &Vec<u8> {
        &self[c as usize]
    }
}

impl std::ops::IndexMut<Column> for Vec<Vec<u8>> {
    fn index_mut(&mut self, c: Column) -> &mut Vec<u8> {
        &mut self[c as usize]
    }
}

/// A block's address dictionaries; `d as usize` is `d`'s position in [`Dict::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dict {
    Inside = 0,
    Outside = 1,
    Remote = 2,
}

impl Dict {
    pub(crate) const ALL: [Dict; 3] = [Dict::Inside, Dict::Outside, Dict::Remote];

    /// The column that holds dictionary `self`.
    pub(super) fn column(self) -> Column {
        match self {
            Dict::Inside => Column::InsideDict,
            Dict::Outside => Column::OutsideDict,
            Dict::Remote => Column::RemoteDict,
        }
    }
}

/// What a block header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockMeta {
    pub kind: BlockKind,
    pub class: u8,
    pub n_full: u64,
    pub n_ref: u64,
    pub first_ordinal: u64,
    pub min_start: i64,
    pub max_start: i64,
    /// The latest end (or start), `i64::MAX` when a record is open.
    pub max_end: i64,
}

pub(crate) fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The high bit of each byte of a word: set in every byte of a varint but its last.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// A cursor over a byte slice.
pub(crate) struct Cur<'a> {
    buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Cur<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cur { buf, pos: 0 }
    }
    pub fn u8(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }
    /// One LEB128 value; one-byte values (the common case in every column) take the inlined
    /// path.
    #[inline]
    pub fn uvarint(&mut self) -> Result<u64, String> {
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.uvarint_long()
    }
    #[inline(never)]
    fn uvarint_long(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift >= 64 {
                return Err("varint too long".into());
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }
    #[inline]
    pub fn ivarint(&mut self) -> Result<i64, String> {
        self.uvarint().map(unzigzag)
    }
    /// Skips `count` LEB128 values: a value ends at a byte with the high bit clear, so whole
    /// 8-byte words are stepped over while they cannot hold more ends than are left to skip.
    pub fn skip(&mut self, mut count: usize) -> Result<(), String> {
        while count >= 8
            && let Some(w) = self.buf.get(self.pos..self.pos + 8)
        {
            let w = u64::from_le_bytes(w.try_into().map_err(|_| "truncated")?);
            count -= (!w & HIGH).count_ones() as usize;
            self.pos += 8;
        }
        while count > 0 {
            if self.u8()? < 0x80 {
                count -= 1;
            }
        }
        Ok(())
    }
    /// The wrapping sum of the next `count` zigzag LEB128 values; runs of one-byte values are
    /// summed eight at a time.
    pub fn sum(&mut self, mut count: usize) -> Result<i64, String> {
        let mut acc = 0i64;
        while count > 0 {
            if count >= 8
                && let Some(w) = self.buf.get(self.pos..self.pos + 8)
            {
                let w = u64::from_le_bytes(w.try_into().map_err(|_| "truncated")?);
                if w & HIGH == 0 {
                    for k in 0..8 {
                        acc = acc.wrapping_add(unzigzag((w >> (8 * k)) & 0x7f));
                    }
                    self.pos += 8;
                    count -= 8;
                    continue;
                }
            }
            acc = acc.wrapping_add(self.ivarint()?);
            count -= 1;
        }
        Ok(acc)
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

/// Service code of a record whose (protocol, remote port) is not in the block's table.
pub(super) const SVC_ESCAPE: u8 = 255;
/// Remote dictionary indices from this one on are escaped.
pub(super) const REM_ESCAPE: u32 = 255;
