//! A minimal writer of the "newc" cpio format the kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst): directories, regular files and
//! symbolic links, owned by root, all with the same time, so that one input gives one archive.

use std::collections::BTreeSet;
use std::io::{self, Write};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// An archive being written. Parent directories are added as needed, once each.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self { out, written: 0, next_ino: 1, dirs: BTreeSet::new() }
    }

    /// A regular file at `path` (relative, no leading `/`) with `mode`'s permission bits.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.parents(path)?;
        self.entry(path, S_IFREG | (mode & 0o7777), data)
    }

    /// A symbolic link at `path` pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.parents(path)?;
        self.entry(path, S_IFLNK | 0o777, target.as_bytes())
    }

    /// A directory (and its parents).
    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        self.parents(path)?;
        if self.dirs.insert(path.to_owned()) {
            self.entry(path, S_IFDIR | 0o755, &[])?;
        }
        Ok(())
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            if !dir.is_empty() && self.dirs.insert(dir.to_owned()) {
                self.entry(dir, S_IFDIR | 0o755, &[])?;
            }
            at += i + 1;
        }
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::other(format!("{name}: too large for cpio")))?;
        let namesize = name.len() as u32 + 1;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check
        let header = format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
            0, 0, 0, 0, 0, 0, 0, 0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archive `cpio -t` would list: each header parsed back, in order.
    fn names(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let h = std::str::from_utf8(&archive[at..at + 110]).expect("ascii header");
            assert_eq!(&h[..6], "070701");
            let field = |i: usize| u32::from_str_radix(&h[6 + 8 * i..14 + 8 * i], 16).expect("hex");
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name_at = at + 110;
            let name = String::from_utf8(archive[name_at..name_at + namesize - 1].to_vec())
                .expect("utf-8 name");
            let data_at = (name_at + namesize).next_multiple_of(4);
            let data = archive[data_at..data_at + size].to_vec();
            at = (data_at + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(at, archive.len(), "nothing after the trailer");
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn entries_parse_back_with_their_parents_first_and_once() {
        let mut w = Writer::new(Vec::new());
        w.file("usr/bin/ip", 0o755, b"elf").expect("file");
        w.file("usr/bin/nft", 0o755, b"elf-2").expect("file");
        w.symlink("bin/sh", "busybox").expect("symlink");
        w.dir("tmp").expect("dir");
        let archive = w.finish().expect("finish");
        assert_eq!(archive.len() % 4, 0);
        let got = names(&archive);
        let listed: Vec<(&str, u32)> = got.iter().map(|(n, m, _)| (n.as_str(), *m)).collect();
        assert_eq!(
            listed,
            [
                ("usr", S_IFDIR | 0o755),
                ("usr/bin", S_IFDIR | 0o755),
                ("usr/bin/ip", S_IFREG | 0o755),
                ("usr/bin/nft", S_IFREG | 0o755),
                ("bin", S_IFDIR | 0o755),
                ("bin/sh", S_IFLNK | 0o777),
                ("tmp", S_IFDIR | 0o755),
            ]
        );
        assert_eq!(got[3].2, b"elf-2");
        assert_eq!(got[5].2, b"busybox");
    }
}
