//! The block codec: records column by column, each column zstd-compressed when that is smaller.
//!
//! `docs/FORMAT.md` ("Block payload") specifies the layout of every column;
//! [`Column`](format::Column) names them in their order. In outline: a block header (kind,
//! class, counts, first ordinal, time range), then the columns' codecs and lengths, then their
//! bytes. Full records come as parallel columns (kind, flags, zone, start deltas, durations in
//! streams by service, addresses as indices into the block's three dictionaries, ports as byte
//! planes, a one-byte code into a per-block table of (protocol, remote port) services); a live
//! block's end references (ends whose start is a record of the same segment) come as three
//! columns of their own.
//!
//! - `records.rs`: records, end references, address interning, the kind codes.
//! - `format.rs`: the block header, the columns and dictionaries, escape codes, varints, [`Cur`].
//! - `encode.rs`: [`encode_block`], with its dictionaries, service table and duration streams.
//! - `decode.rs`: [`BlockView`] (parsing, pooled column decompression), dictionaries, records.
//! - `scan.rs`: [`BlockView::candidates`], the rows a [`Select`] may match, from a few columns.
//! - `tests.rs`: round trips, scans against full decodes, the varint and cursor fast paths.

mod decode;
mod encode;
mod format;
mod records;
mod scan;
#[cfg(test)]
mod tests;

#[cfg(feature = "fuzzing")]
pub(crate) use decode::Dicts;
pub(crate) use decode::{BlockView, DictLens, DictView};
pub(crate) use encode::encode_block;
pub(crate) use format::{BlockKind, BlockMeta, CLASS_CARRIED, CLASS_LIVE, Cur, Dict, put_uvarint};
pub(crate) use records::{EndRef, FastMap, Interner, Rec, kind_from_code, kind_to_code};
pub(crate) use scan::Select;
