//! A small reader of the kernel's BTF, enough to find struct member offsets and enum values.
//!
//! natrec's eBPF programs are written in Rust, which has no CO-RE: instead of relocations, the
//! offsets of the few kernel members they read (`sk_buff._nfct`, `nf_conn.status`, the conntrack
//! tuples, the timestamp extension) are computed here from the running kernel's BTF and handed
//! to the programs as a global ([`recorder_common::KernelOffsets`]). Nothing is hard-coded.
//!
//! Format (Documentation/bpf/btf.rst): a header (`magic 0xeB9F`, version 1, flags, `hdr_len`,
//! type and string section offsets and lengths, all native-endian), a type section of
//! variable-length records, and a string section. Type ids start at 1. Module BTF
//! (`/sys/kernel/btf/<module>`) is *split* BTF: its type ids and string offsets continue those of
//! `vmlinux`.

use std::path::{Path, PathBuf};

use recorder_common::KernelOffsets;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "this kernel exposes no BTF at /sys/kernel/btf/vmlinux: natrec needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.x)"
    )]
    NoKernelBtf,
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("kernel BTF has no {0}: is nf_conntrack loaded? (modprobe nf_conntrack nf_nat)")]
    Missing(String),
}

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    ty: u32,
    /// Offset in bits (bitfield size stripped).
    bit_offset: u32,
}

#[derive(Clone, Debug)]
enum Detail {
    None,
    Array {
        elem: u32,
        nelems: u32,
    },
    Members(Vec<Member>),
    Enum(Vec<(u32, i64)>),
    /// A function prototype's parameter types.
    Params(Vec<u32>),
}

#[derive(Clone, Debug)]
struct Type {
    name: u32,
    kind: u32,
    /// `size` for sized kinds, `type` for reference kinds.
    size_or_type: u32,
    detail: Detail,
}

/// One BTF object (with its base merged in, for split BTF).
#[derive(Clone, Debug)]
pub struct Btf {
    /// Index 0 is `void`.
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BtfError> {
    b.get(at..at + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at byte {at}")))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at byte {at}")))
}

impl Btf {
    /// Parses a BTF blob. `base` is the BTF that split BTF (a module's) builds on.
    pub fn parse(data: &[u8], base: Option<&Btf>) -> Result<Btf, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not native-endian BTF)".into()));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize| {
            data.get(hdr_len + off..hdr_len + off + len)
                .ok_or_else(|| BtfError::Malformed("section out of bounds".into()))
        };
        let tsec = section(type_off, type_len)?;
        let ssec = section(str_off, str_len)?;

        let (mut types, mut strings) = match base {
            Some(b) => (b.types.clone(), b.strings.clone()),
            None => {
                (vec![Type { name: 0, kind: 0, size_or_type: 0, detail: Detail::None }], Vec::new())
            }
        };
        // Split BTF numbers its strings after the base's, so once the sections are concatenated
        // every name offset indexes the combined table as it is.
        strings.extend_from_slice(ssec);

        let mut at = 0usize;
        while at < tsec.len() {
            let name_off = u32_at(tsec, at)?;
            let info = u32_at(tsec, at + 4)?;
            let size_or_type = u32_at(tsec, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kflag = info >> 31 == 1;
            let detail = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => {
                    at += 4;
                    Detail::None
                }
                KIND_ARRAY => {
                    let elem = u32_at(tsec, at)?;
                    let nelems = u32_at(tsec, at + 8)?;
                    at += 12;
                    Detail::Array { elem, nelems }
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let off = u32_at(tsec, at + 8)?;
                        members.push(Member {
                            name: u32_at(tsec, at)?,
                            ty: u32_at(tsec, at + 4)?,
                            bit_offset: if kflag { off & 0xff_ffff } else { off },
                        });
                        at += 12;
                    }
                    Detail::Members(members)
                }
                KIND_ENUM => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        values.push((u32_at(tsec, at)?, u32_at(tsec, at + 4)? as i32 as i64));
                        at += 8;
                    }
                    Detail::Enum(values)
                }
                KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let lo = u32_at(tsec, at + 4)? as u64;
                        let hi = u32_at(tsec, at + 8)? as u64;
                        values.push((u32_at(tsec, at)?, (hi << 32 | lo) as i64));
                        at += 12;
                    }
                    Detail::Enum(values)
                }
                KIND_FUNC_PROTO => {
                    let mut params = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        params.push(u32_at(tsec, at + 4)?);
                        at += 8;
                    }
                    Detail::Params(params)
                }
                KIND_DATASEC => {
                    at += 12 * vlen;
                    Detail::None
                }
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => Detail::None,
                other => {
                    return Err(BtfError::Malformed(format!("unknown type kind {other}")));
                }
            };
            types.push(Type { name: name_off, kind, size_or_type, detail });
        }
        Ok(Btf { types, strings })
    }

    /// Reads and parses a BTF file.
    pub fn from_file(path: &Path, base: Option<&Btf>) -> Result<Btf, BtfError> {
        let data = std::fs::read(path)
            .map_err(|source| BtfError::Read { path: path.to_owned(), source })?;
        Self::parse(&data, base)
    }

    fn str(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or_else(|| BtfError::Malformed(format!("type id {id} out of range")))
    }

    /// Skips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed(format!("type chain too long at {id}")))
    }

    /// Size in bytes of a type.
    fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        let id = self.resolve(id)?;
        let t = self.ty(id)?;
        match (&t.detail, t.kind) {
            (Detail::Array { elem, nelems }, _) => Ok(self.size_of(*elem)? * nelems),
            (_, KIND_PTR) => Ok(8),
            _ => Ok(t.size_or_type),
        }
    }

    /// The id of the struct (or union) called `name` that has members (not a forward).
    fn find_composite(&self, name: &str) -> Option<u32> {
        self.types.iter().enumerate().find_map(|(id, t)| {
            ((t.kind == KIND_STRUCT || t.kind == KIND_UNION)
                && matches!(&t.detail, Detail::Members(m) if !m.is_empty())
                && self.str(t.name) == name)
                .then_some(id as u32)
        })
    }

    /// Finds `name` among the members of composite `id`, looking into anonymous members.
    /// Returns (bit offset, member type).
    fn member(&self, id: u32, name: &str) -> Result<Option<(u32, u32)>, BtfError> {
        let t = self.ty(self.resolve(id)?)?;
        let Detail::Members(members) = &t.detail else {
            return Ok(None);
        };
        for m in members {
            if self.str(m.name) == name {
                return Ok(Some((m.bit_offset, m.ty)));
            }
        }
        for m in members.iter().filter(|m| m.name == 0 || self.str(m.name).is_empty()) {
            if let Some((off, ty)) = self.member(m.ty, name)? {
                return Ok(Some((m.bit_offset + off, ty)));
            }
        }
        Ok(None)
    }

    /// Byte offset of `path` (member names, outermost first) inside struct `name`, and the
    /// member's type id. `None` when the struct or a member does not exist.
    fn path_offset(&self, name: &str, path: &[&str]) -> Result<Option<(u32, u32)>, BtfError> {
        let Some(mut id) = self.find_composite(name) else {
            return Ok(None);
        };
        let mut bits = 0;
        for step in path {
            let Some((off, ty)) = self.member(id, step)? else {
                return Ok(None);
            };
            bits += off;
            id = ty;
        }
        if bits % 8 != 0 {
            return Err(BtfError::Malformed(format!("{name}.{} is a bitfield", path.join("."))));
        }
        Ok(Some((bits / 8, id)))
    }

    /// Byte offset of a member path inside a struct, if both exist.
    pub fn offset_of(&self, name: &str, path: &[&str]) -> Result<Option<u32>, BtfError> {
        Ok(self.path_offset(name, path)?.map(|(off, _)| off))
    }

    /// Size of the element type of the array member `path` of struct `name`.
    pub fn array_elem_size(&self, name: &str, path: &[&str]) -> Result<Option<u32>, BtfError> {
        let Some((_, ty)) = self.path_offset(name, path)? else {
            return Ok(None);
        };
        match &self.ty(self.resolve(ty)?)?.detail {
            Detail::Array { elem, .. } => Ok(Some(self.size_of(*elem)?)),
            _ => Err(BtfError::Malformed(format!("{name}.{} is not an array", path.join(".")))),
        }
    }

    /// The struct that argument `n` (from 0) of tracepoint `tp` points at, as BTF-enabled
    /// tracepoint programs see it: the kernel's `btf_trace_<tp>` typedef is a pointer to a
    /// function whose first parameter is the program's context, then the tracepoint's own.
    /// `None` when the tracepoint does not exist or that argument is not a struct pointer.
    pub fn tracepoint_arg_struct(&self, tp: &str, n: usize) -> Result<Option<String>, BtfError> {
        let name = format!("btf_trace_{tp}");
        let Some(id) =
            self.types.iter().position(|t| t.kind == KIND_TYPEDEF && self.str(t.name) == name)
        else {
            return Ok(None);
        };
        let Some(proto) = self.pointee(id as u32)? else {
            return Ok(None);
        };
        let Detail::Params(params) = &self.ty(proto)?.detail else {
            return Ok(None);
        };
        let Some(&arg) = params.get(n + 1) else {
            return Ok(None);
        };
        let Some(target) = self.pointee(arg)? else {
            return Ok(None);
        };
        let t = self.ty(target)?;
        Ok((t.kind == KIND_STRUCT).then(|| self.str(t.name).to_owned()))
    }

    /// What a pointer type (behind typedefs and qualifiers) points at, itself resolved.
    fn pointee(&self, id: u32) -> Result<Option<u32>, BtfError> {
        let t = self.ty(self.resolve(id)?)?;
        if t.kind != KIND_PTR {
            return Ok(None);
        }
        Ok(Some(self.resolve(t.size_or_type)?))
    }

    /// The value of enumerator `name` in any enum.
    pub fn enum_value(&self, name: &str) -> Option<i64> {
        self.types.iter().find_map(|t| match &t.detail {
            Detail::Enum(values) => {
                values.iter().find(|(n, _)| self.str(*n) == name).map(|(_, v)| *v)
            }
            _ => None,
        })
    }
}

/// The running kernel's BTF: `vmlinux` plus the modules natrec cares about, when they are
/// modules (each module's split BTF merged with vmlinux).
pub struct KernelBtf {
    objects: Vec<Btf>,
}

/// Modules whose types natrec reads when conntrack is not built in.
const MODULES: [&str; 2] = ["nf_conntrack", "nf_nat"];

impl KernelBtf {
    /// Loads `/sys/kernel/btf/vmlinux` and the conntrack modules' BTF.
    pub fn load() -> Result<Self, BtfError> {
        Self::load_from(Path::new("/sys/kernel/btf"))
    }

    /// Loads from a directory laid out like `/sys/kernel/btf`.
    pub fn load_from(dir: &Path) -> Result<Self, BtfError> {
        let vmlinux = dir.join("vmlinux");
        if !vmlinux.exists() {
            return Err(BtfError::NoKernelBtf);
        }
        let base = Btf::from_file(&vmlinux, None)?;
        let mut objects = Vec::new();
        for m in MODULES {
            let p = dir.join(m);
            if p.exists() {
                objects.push(Btf::from_file(&p, Some(&base))?);
            }
        }
        objects.insert(0, base);
        Ok(Self { objects })
    }

    fn first<T>(
        &self,
        f: impl Fn(&Btf) -> Result<Option<T>, BtfError>,
    ) -> Result<Option<T>, BtfError> {
        for b in &self.objects {
            if let Some(v) = f(b)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    fn required(&self, name: &str, path: &[&str]) -> Result<u32, BtfError> {
        self.optional(name, path)?
            .ok_or_else(|| BtfError::Missing(format!("struct {name}.{}", path.join("."))))
    }

    fn optional(&self, name: &str, path: &[&str]) -> Result<Option<u32>, BtfError> {
        self.first(|b| b.offset_of(name, path))
    }

    /// Computes every offset the eBPF programs read.
    pub fn offsets(&self) -> Result<KernelOffsets, BtfError> {
        const ABSENT: u32 = KernelOffsets::ABSENT;
        let tuplehash = self.required("nf_conn", &["tuplehash"])?;
        let hash_size = self
            .first(|b| b.array_elem_size("nf_conn", &["tuplehash"]))?
            .ok_or_else(|| BtfError::Missing("struct nf_conn.tuplehash".into()))?;
        let tuple_in_hash = self.required("nf_conntrack_tuple_hash", &["tuple"])?;
        let tstamp_id = self
            .first(|b| Ok(b.enum_value("NF_CT_EXT_TSTAMP")))?
            .and_then(|v| u32::try_from(v).ok());
        let ext_offset = self.optional("nf_ct_ext", &["offset"])?;
        let tstamp_start = self.optional("nf_conn_tstamp", &["start"])?;
        let ct_ext = self.optional("nf_conn", &["ext"])?;
        // The timestamp is usable only if every piece of the path to it exists.
        let tstamp = match (ct_ext, ext_offset, tstamp_id, tstamp_start) {
            (Some(a), Some(b), Some(c), Some(d)) => [a, b, c, d],
            _ => [ABSENT; 4],
        };
        Ok(KernelOffsets {
            skb_nfct: self.required("sk_buff", &["_nfct"])?,
            ct_status: self.required("nf_conn", &["status"])?,
            ct_tuple_orig: tuplehash + tuple_in_hash,
            ct_tuple_reply: tuplehash + hash_size + tuple_in_hash,
            ct_zone_id: self.optional("nf_conn", &["zone", "id"])?.unwrap_or(ABSENT),
            ct_ext: tstamp[0],
            tuple_src_u3: self.required("nf_conntrack_tuple", &["src", "u3"])?,
            tuple_src_u: self.required("nf_conntrack_tuple", &["src", "u"])?,
            tuple_src_l3num: self.required("nf_conntrack_tuple", &["src", "l3num"])?,
            tuple_dst_u3: self.required("nf_conntrack_tuple", &["dst", "u3"])?,
            tuple_dst_u: self.required("nf_conntrack_tuple", &["dst", "u"])?,
            tuple_dst_protonum: self.required("nf_conntrack_tuple", &["dst", "protonum"])?,
            ext_offset: tstamp[1],
            ext_tstamp_id: tstamp[2],
            tstamp_start: tstamp[3],
            ct_timeout: self.optional("nf_conn", &["timeout"])?.unwrap_or(ABSENT),
            ct_net: self.optional("nf_conn", &["ct_net", "net"])?.unwrap_or(ABSENT),
            net_inum: self.optional("net", &["ns", "inum"])?.unwrap_or(ABSENT),
            cache_name: self.optional("kmem_cache", &["name"])?.unwrap_or(ABSENT),
            netns_inum: 0,
        })
    }

    /// Why the end probe (`kmem_cache_free` as a raw tracepoint, see
    /// `recorder-ebpf/src/probes/ct_free.rs`) cannot run on this kernel, if it cannot: it reads
    /// the freed object as the second argument and the cache as the third (Linux 6.1 and later
    /// have `kmem_cache_free(call_site, ptr, s)`), and needs the cache's name and the entry's
    /// timeout.
    pub fn end_probe_unusable(&self, o: &KernelOffsets) -> Result<Option<String>, BtfError> {
        let arg = self.first(|b| b.tracepoint_arg_struct("kmem_cache_free", 2))?;
        if arg.as_deref() != Some("kmem_cache") {
            return Ok(Some(
                "the kmem_cache_free tracepoint does not pass the cache (Linux 6.1 or later does)"
                    .into(),
            ));
        }
        for (what, off) in [("kmem_cache.name", o.cache_name), ("nf_conn.timeout", o.ct_timeout)] {
            if off == KernelOffsets::ABSENT {
                return Ok(Some(format!("kernel BTF has no struct {what}")));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from raw type records and a string table.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let tbytes: Vec<u8> = types.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
        b.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, tbytes.len() as u32, tbytes.len() as u32, strings.len() as u32] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&tbytes);
        b.extend_from_slice(strings);
        b
    }

    fn info(kind: u32, vlen: u32, kflag: bool) -> u32 {
        (kind << 24) | vlen | if kflag { 1 << 31 } else { 0 }
    }

    #[test]
    fn finds_members_through_anonymous_unions_typedefs_and_arrays() {
        // strings: 0 "", 1 "int", 5 "outer", 11 "a", 13 "b", 15 "inner_t", 23 "arr", 27 "E_ONE"
        let strings = b"\0int\0outer\0a\0b\0inner_t\0arr\0E_ONE\0";
        let types = [
            // 1: int (4 bytes)
            1,
            info(KIND_INT, 0, false),
            4,
            32,
            // 2: anonymous union { int b @0 }
            0,
            info(KIND_UNION, 1, false),
            4,
            13,
            1,
            0,
            // 3: array of 3 x int
            0,
            info(KIND_ARRAY, 0, false),
            0,
            1,
            1,
            3,
            // 4: typedef inner_t = type 3
            15,
            info(KIND_TYPEDEF, 0, false),
            3,
            // 5: struct outer { int a @0; union (anon) @64 bits; inner_t arr @96 bits (kflag) }
            5,
            info(KIND_STRUCT, 3, true),
            24,
            11,
            1,
            0,
            0,
            2,
            64,
            23,
            4,
            96,
            // 6: enum { E_ONE = 7 }
            0,
            info(KIND_ENUM, 1, false),
            4,
            27,
            7,
        ];
        let btf = Btf::parse(&blob(&types, strings), None).expect("parse");
        assert_eq!(btf.offset_of("outer", &["a"]).expect("a"), Some(0));
        assert_eq!(btf.offset_of("outer", &["b"]).expect("b"), Some(8));
        assert_eq!(btf.offset_of("outer", &["arr"]).expect("arr"), Some(12));
        assert_eq!(btf.array_elem_size("outer", &["arr"]).expect("elem"), Some(4));
        assert_eq!(btf.offset_of("outer", &["zz"]).expect("zz"), None);
        assert_eq!(btf.offset_of("nope", &["a"]).expect("nope"), None);
        assert_eq!(btf.enum_value("E_ONE"), Some(7));

        // Split BTF on top of it: struct s2 { outer o @32 bits } (type 7), names continue.
        let split_strings = b"\0s2\0o\0";
        let base_len = strings.len() as u32;
        let split = [base_len + 1, info(KIND_STRUCT, 1, false), 28, base_len + 4, 5, 32];
        let s = Btf::parse(&blob(&split, split_strings), Some(&btf)).expect("split");
        assert_eq!(s.offset_of("s2", &["o", "b"]).expect("o.b"), Some(12));
    }

    #[test]
    fn tracepoint_arguments_are_read_from_the_btf_trace_typedef() {
        // strings: 0 "", 1 "kmem_cache", 12 "btf_trace_kmem_cache_free", 38 "name"
        let strings = b"\0kmem_cache\0btf_trace_kmem_cache_free\0name\0";
        let types = [
            // 1: struct kmem_cache { void *name @0 }
            1,
            info(KIND_STRUCT, 1, false),
            8,
            38,
            5,
            0,
            // 2: const struct kmem_cache
            0,
            info(KIND_CONST, 0, false),
            1,
            // 3: pointer to 2
            0,
            info(KIND_PTR, 0, false),
            2,
            // 4: func proto (void *ctx, unsigned long call_site, void *ptr, const kmem_cache *s)
            0,
            info(KIND_FUNC_PROTO, 4, false),
            0,
            0,
            5,
            0,
            6,
            0,
            5,
            0,
            3,
            // 5: void *
            0,
            info(KIND_PTR, 0, false),
            0,
            // 6: int-ish (unsigned long)
            0,
            info(KIND_INT, 0, false),
            8,
            64,
            // 7: pointer to the proto
            0,
            info(KIND_PTR, 0, false),
            4,
            // 8: typedef btf_trace_kmem_cache_free = 7
            12,
            info(KIND_TYPEDEF, 0, false),
            7,
        ];
        let btf = Btf::parse(&blob(&types, strings), None).expect("parse");
        let arg = |n| btf.tracepoint_arg_struct("kmem_cache_free", n).expect("lookup");
        assert_eq!(arg(2).as_deref(), Some("kmem_cache"));
        assert_eq!(arg(1), None, "a void pointer is not a struct");
        assert_eq!(arg(0), None, "an integer is not a pointer");
        assert_eq!(arg(3), None, "no fourth argument");
        assert_eq!(btf.tracepoint_arg_struct("kfree", 0).expect("lookup"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(b"", None).is_err());
        assert!(
            Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 99, 0, 0, 0], None).is_err()
        );
        let mut b = blob(&[0, info(KIND_STRUCT, 5, false), 4], b"\0");
        assert!(Btf::parse(&b, None).is_err(), "members past the end");
        b.truncate(30);
        assert!(Btf::parse(&b, None).is_err());
    }

    #[test]
    #[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
    fn running_kernel_offsets_are_consistent() {
        let k = KernelBtf::load().unwrap_or_else(|e| panic!("kernel BTF: {e}"));
        let o = k.offsets().expect("offsets");
        // The reply tuple follows the original one by one tuple_hash.
        assert!(o.ct_tuple_reply > o.ct_tuple_orig);
        // union nf_inet_addr is 16 bytes and comes first in nf_conntrack_man.
        assert_eq!(o.tuple_src_u3, 0);
        assert_eq!(o.tuple_src_u, 16);
        assert!(o.tuple_dst_u3 > o.tuple_src_l3num);
        assert!(o.tuple_dst_protonum > o.tuple_dst_u);
        assert_ne!(o.skb_nfct, KernelOffsets::ABSENT);
        // The end probe's members; on Linux 6.1 and later (CI's kernel) it can run.
        assert_ne!(o.ct_timeout, KernelOffsets::ABSENT);
        assert_ne!(o.cache_name, KernelOffsets::ABSENT);
        let release = crate::capture::kernel_release();
        if crate::capture::kernel_major_minor(&release).is_some_and(|v| v >= (6, 1)) {
            assert_eq!(
                k.end_probe_unusable(&o).expect("end probe check"),
                None,
                "kernel {release}"
            );
        }
    }
}
