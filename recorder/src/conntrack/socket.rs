//! ctnetlink sockets: the reliable DESTROY event socket and the dump socket.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::ConntrackError;
use super::parse::{
    self, CtEntry, CtMsgKind, IPCTNL_MSG_CT_GET, NFNL_SUBSYS_CTNETLINK, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NlMsgs,
};

/// `NFNLGRP_CONNTRACK_DESTROY`.
const NFNLGRP_CONNTRACK_DESTROY: libc::c_int = 3;

/// Receive buffer for one dump datagram: far more than any ctnetlink dump part.
const RECV_BUF_BYTES: usize = 1 << 20;

/// Datagrams one `recvmmsg` call of the event socket can take.
const EVENT_SLOTS: usize = 64;
/// Room for one event datagram. The kernel sends each event in a datagram of its own, sized for
/// the entry (a few hundred bytes; at most `NLMSG_GOODSIZE`, under 8 KiB): a longer one would
/// be counted unreadable, not misread.
const EVENT_SLOT_BYTES: usize = 16 << 10;

/// A netlink socket of the `NETLINK_NETFILTER` family, bound in the calling thread's netns.
#[derive(Debug)]
struct NlSocket {
    fd: OwnedFd,
}

/// Maps an errno of a ctnetlink operation to the error a user can act on.
fn os_error(what: &'static str, err: io::Error) -> ConntrackError {
    match err.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => ConntrackError::NeedsCapNetAdmin { what },
        Some(libc::EPROTONOSUPPORT | libc::ENOENT | libc::EOPNOTSUPP | libc::EAFNOSUPPORT) => {
            ConntrackError::NotLoaded { what, source: err }
        }
        _ => ConntrackError::Io { what, source: err },
    }
}

fn errno(what: &'static str) -> ConntrackError {
    os_error(what, io::Error::last_os_error())
}

impl NlSocket {
    fn open() -> Result<Self, ConntrackError> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(errno("opening a ctnetlink socket"));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (nl_pid 0: kernel picks).
        let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl and the length is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(errno("binding a ctnetlink socket"));
        }
        Ok(Self { fd })
    }

    fn set_int(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
        what: &'static str,
    ) -> Result<(), ConntrackError> {
        // SAFETY: the option value is a valid c_int of the given length.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw const value).cast::<libc::c_void>(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(errno(what)) } else { Ok(()) }
    }

    fn get_int(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        what: &'static str,
    ) -> Result<libc::c_int, ConntrackError> {
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw mut value).cast::<libc::c_void>(),
                &mut len,
            )
        };
        if rc < 0 { Err(errno(what)) } else { Ok(value) }
    }

    fn set_timeout(&self, timeout: Duration) -> Result<(), ConntrackError> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            tv_usec: timeout.subsec_micros().into(),
        };
        // SAFETY: the option value is a valid timeval of the given length.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast::<libc::c_void>(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(errno("setting the ctnetlink read timeout")) } else { Ok(()) }
    }

    /// Receives one datagram; `Ok(n)` with `n > buf.len()` means it was truncated (MSG_TRUNC).
    fn recv(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
                flags | libc::MSG_TRUNC,
            )
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }

    /// Receives up to `lens.len()` (at most [`EVENT_SLOTS`]) datagrams with one `recvmmsg`
    /// call, datagram `i` into `buf[i * slot..][..slot]`, its full length into `lens[i]` (more
    /// than `slot`: truncated). Returns how many came; `flags` as for `recvmmsg` (the kernel
    /// keeps an error met after the first datagram for the next call).
    fn recv_many(
        &self,
        buf: &mut [u8],
        slot: usize,
        lens: &mut [usize],
        flags: libc::c_int,
    ) -> io::Result<usize> {
        let want = lens.len().min(EVENT_SLOTS).min(buf.len() / slot.max(1));
        // SAFETY: iovec and mmsghdr are plain data; all-zero is a valid value of both.
        let mut iov: [libc::iovec; EVENT_SLOTS] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; EVENT_SLOTS] = unsafe { zeroed() };
        for ((chunk, v), h) in buf.chunks_exact_mut(slot).zip(&mut iov).zip(&mut hdrs).take(want) {
            v.iov_base = chunk.as_mut_ptr().cast::<libc::c_void>();
            v.iov_len = slot;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `want` headers each point at one iovec naming a distinct `slot`-byte
        // part of `buf`; `buf`, `iov` and `hdrs` outlive the call; no timeout is passed.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                want as libc::c_uint,
                flags | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(want);
        for (len, h) in lens.iter_mut().zip(&hdrs).take(n) {
            *len = h.msg_len as usize;
        }
        Ok(n)
    }

    fn send(&self, msg: &[u8]) -> Result<(), ConntrackError> {
        loop {
            // SAFETY: `msg` is valid for reads of `msg.len()` bytes; an unconnected netlink
            // socket sends to the kernel.
            let n = unsafe {
                libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast::<libc::c_void>(), msg.len(), 0)
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(os_error("sending a ctnetlink request", err));
            }
        }
    }
}

/// How [`EventSocket::recv_batch`] waits for the first datagram of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Never wait: return at once when nothing is queued (for callers polling the fd).
    NonBlocking,
    /// Wait until a datagram (or an error) arrives.
    Forever,
    /// Wait at most this long (the reader thread can then check whether it should stop).
    Timeout(Duration),
}

/// Settings of the DESTROY event socket.
#[derive(Clone, Copy, Debug)]
pub struct EventOptions {
    /// Receive buffer asked of the kernel (`SO_RCVBUFFORCE`; the kernel doubles it for
    /// bookkeeping). Falls back to `SO_RCVBUF`, capped by `net.core.rmem_max`, with a warning
    /// when natrec may not force it.
    pub rcvbuf_bytes: usize,
    /// How a batch waits for its first datagram.
    pub wait: Wait,
    /// Most datagrams read by one [`EventSocket::recv_batch`] call.
    pub max_batch: usize,
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            rcvbuf_bytes: 64 << 20,
            wait: Wait::Timeout(Duration::from_millis(200)),
            max_batch: 4096,
        }
    }
}

/// What one [`EventSocket::recv_batch`] call saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct RecvStatus {
    /// DESTROY entries appended to the output.
    pub entries: usize,
    /// ENOBUFS errors (and `NLMSG_OVERRUN` messages) the socket reported. In reliable mode
    /// the kernel keeps a dying entry until its event is delivered, so this is normally not a
    /// loss, but natrec cannot prove it: resync with a dump and mark ends seen only by it
    /// approximate.
    pub enobufs: u32,
    /// Messages that could not be read (truncated datagrams, malformed messages, unexpected
    /// netlink errors): events that may be lost; resync as for `enobufs`.
    pub unreadable: u32,
    /// The call stopped because nothing more was queued (`false`: it stopped at
    /// [`EventOptions::max_batch`] and more may be waiting).
    pub drained: bool,
}

impl RecvStatus {
    /// Whether the caller should resync by a dump (an event may have been lost).
    pub fn needs_resync(&self) -> bool {
        self.enobufs > 0 || self.unreadable > 0
    }
}

/// Totals since the socket was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Datagrams received.
    pub datagrams: u64,
    /// DESTROY entries delivered.
    pub destroys: u64,
    /// ENOBUFS errors and `NLMSG_OVERRUN` messages.
    pub enobufs: u64,
    /// Unreadable messages (see [`RecvStatus::unreadable`]).
    pub unreadable: u64,
    /// Other messages (not a ctnetlink conntrack DESTROY), skipped.
    pub ignored: u64,
}

/// The ctnetlink DESTROY event socket, in reliable mode.
///
/// Bound to `NFNLGRP_CONNTRACK_DESTROY` in the network namespace of the thread that opens it,
/// with `NETLINK_BROADCAST_ERROR` set (as conntrackd's `NetlinkEventsReliable`): when an event
/// does not fit the socket's buffer, the kernel keeps the dying entry and delivers its DESTROY
/// later instead of dropping it. `NETLINK_NO_ENOBUFS` is not set, so every overrun is reported.
///
/// Caveat of reliable mode: dying entries count against `nf_conntrack_max` until read, so the
/// reader must never stall on anything downstream.
#[derive(Debug)]
pub struct EventSocket {
    sock: NlSocket,
    reader: EventReader,
    rcvbuf: usize,
}

impl EventSocket {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open(opts: &EventOptions) -> Result<Self, ConntrackError> {
        let sock = NlSocket::open()?;
        sock.set_int(
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            NFNLGRP_CONNTRACK_DESTROY,
            "joining the conntrack DESTROY event group",
        )?;
        sock.set_int(
            libc::SOL_NETLINK,
            libc::NETLINK_BROADCAST_ERROR,
            1,
            "setting NETLINK_BROADCAST_ERROR (reliable events)",
        )?;
        let want = libc::c_int::try_from(opts.rcvbuf_bytes.min(i32::MAX as usize / 2))
            .unwrap_or(i32::MAX / 2);
        if let Err(e) =
            sock.set_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want, "setting SO_RCVBUFFORCE")
        {
            tracing::warn!(
                "could not force a {} byte ctnetlink receive buffer ({e}); asking SO_RCVBUF, which net.core.rmem_max caps",
                opts.rcvbuf_bytes
            );
            sock.set_int(libc::SOL_SOCKET, libc::SO_RCVBUF, want, "setting SO_RCVBUF")?;
        }
        let rcvbuf = sock.get_int(libc::SOL_SOCKET, libc::SO_RCVBUF, "reading SO_RCVBUF")?;
        if let Wait::Timeout(t) = opts.wait {
            sock.set_timeout(t)?;
        }
        Ok(Self {
            sock,
            reader: EventReader::new(*opts, EVENT_SLOT_BYTES),
            rcvbuf: usize::try_from(rcvbuf).unwrap_or(0),
        })
    }

    /// The receive buffer the kernel granted (`SO_RCVBUF`, which counts its bookkeeping too).
    pub fn rcvbuf_bytes(&self) -> usize {
        self.rcvbuf
    }

    /// Totals since the socket was opened.
    pub fn stats(&self) -> EventStats {
        self.reader.stats
    }

    /// Reads the queued DESTROY events into `out` (appending).
    ///
    /// Waits for the first datagram as [`EventOptions::wait`] says, then reads without waiting
    /// until nothing is queued or [`EventOptions::max_batch`] datagrams were read, up to 64 of
    /// them per system call (`recvmmsg`). ENOBUFS, truncated datagrams and malformed messages
    /// are counted in the status, never fatal: the reader keeps reading. An error is returned
    /// only when the socket itself fails.
    pub fn recv_batch(&mut self, out: &mut Vec<CtEntry>) -> Result<RecvStatus, ConntrackError> {
        self.reader.recv_batch(&mut self.sock, out)
    }
}

/// Where an [`EventReader`] gets its datagrams: the netlink socket, or a script in tests.
trait Datagrams {
    /// As [`NlSocket::recv_many`].
    fn recv_many(
        &mut self,
        buf: &mut [u8],
        slot: usize,
        lens: &mut [usize],
        flags: libc::c_int,
    ) -> io::Result<usize>;
}

impl Datagrams for NlSocket {
    fn recv_many(
        &mut self,
        buf: &mut [u8],
        slot: usize,
        lens: &mut [usize],
        flags: libc::c_int,
    ) -> io::Result<usize> {
        NlSocket::recv_many(self, buf, slot, lens, flags)
    }
}

/// The event socket's reading and counting, apart from the socket.
#[derive(Debug)]
struct EventReader {
    /// [`EVENT_SLOTS`] slots of `slot` bytes, one datagram each.
    buf: Vec<u8>,
    slot: usize,
    lens: [usize; EVENT_SLOTS],
    opts: EventOptions,
    stats: EventStats,
}

impl EventReader {
    fn new(opts: EventOptions, slot: usize) -> Self {
        Self {
            buf: vec![0; EVENT_SLOTS * slot],
            slot,
            lens: [0; EVENT_SLOTS],
            opts,
            stats: EventStats::default(),
        }
    }

    fn recv_batch(
        &mut self,
        src: &mut impl Datagrams,
        out: &mut Vec<CtEntry>,
    ) -> Result<RecvStatus, ConntrackError> {
        let mut st = RecvStatus::default();
        let max = self.opts.max_batch.max(1);
        let mut datagrams = 0usize;
        let mut first = self.opts.wait != Wait::NonBlocking;
        while datagrams < max {
            // Blocking: wait for the first datagram only (the socket's timeout bounds the wait).
            let flags = if first { libc::MSG_WAITFORONE } else { libc::MSG_DONTWAIT };
            let want = (max - datagrams).min(EVENT_SLOTS);
            let got = match src.recv_many(&mut self.buf, self.slot, &mut self.lens[..want], flags) {
                Ok(0) => {
                    st.drained = true;
                    return Ok(st);
                }
                Ok(n) => n.min(want),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => {
                        st.drained = true;
                        return Ok(st);
                    }
                    Some(libc::ENOBUFS) => {
                        st.enobufs += 1;
                        self.stats.enobufs += 1;
                        // Events are queued (the buffer filled up): read them without waiting.
                        first = false;
                        continue;
                    }
                    _ => return Err(os_error("reading ctnetlink events", e)),
                },
            };
            first = false;
            datagrams += got;
            self.stats.datagrams += got as u64;
            for (dgram, &n) in self.buf.chunks_exact(self.slot).zip(&self.lens).take(got) {
                if n > self.slot {
                    tracing::warn!(
                        "a {n} byte ctnetlink datagram did not fit the {} byte buffer",
                        self.slot
                    );
                    st.unreadable += 1;
                    self.stats.unreadable += 1;
                    continue;
                }
                read_datagram(&dgram[..n], &mut st, &mut self.stats, out);
            }
        }
        Ok(st)
    }
}

/// Reads the messages of one event datagram: DESTROY entries into `out`, the rest counted.
fn read_datagram(
    dgram: &[u8],
    st: &mut RecvStatus,
    stats: &mut EventStats,
    out: &mut Vec<CtEntry>,
) {
    for msg in NlMsgs::new(dgram) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("skipping the rest of a ctnetlink datagram: {e}");
                st.unreadable += 1;
                stats.unreadable += 1;
                break;
            }
        };
        match msg.ty {
            NLMSG_NOOP | NLMSG_DONE => stats.ignored += 1,
            NLMSG_OVERRUN => {
                st.enobufs += 1;
                stats.enobufs += 1;
            }
            NLMSG_ERROR => {
                let errno = parse::payload_errno(msg.payload).unwrap_or(libc::EPROTO);
                if errno != 0 {
                    tracing::warn!(
                        "ctnetlink event socket got an error message: {}",
                        io::Error::from_raw_os_error(errno)
                    );
                    st.unreadable += 1;
                    stats.unreadable += 1;
                }
            }
            ty => match parse::parse_ct_msg(ty, msg.payload) {
                Ok(Some((CtMsgKind::Delete, e))) => {
                    out.push(e);
                    st.entries += 1;
                    stats.destroys += 1;
                }
                Ok(_) => stats.ignored += 1,
                Err(e) => {
                    tracing::warn!("skipping a ctnetlink event: {e}");
                    st.unreadable += 1;
                    stats.unreadable += 1;
                }
            },
        }
    }
}

impl AsFd for EventSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.fd.as_fd()
    }
}

impl AsRawFd for EventSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.fd.as_raw_fd()
    }
}

/// What one dump pass saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct DumpPass {
    /// Entries handed to the callback.
    pub entries: u64,
    /// Messages that could not be parsed (skipped, with a warning).
    pub unreadable: u64,
    /// The kernel flagged the dump inconsistent (`NLM_F_DUMP_INTR`): the table changed in a way
    /// that may have hidden or repeated entries; redo it.
    pub interrupted: bool,
}

/// How many times [`DumpSocket::dump`] redoes an interrupted dump.
const DUMP_ATTEMPTS: u32 = 3;

/// A socket for dumping the conntrack table (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`).
///
/// Dumps every entry of both families and every zone in the network namespace of the thread
/// that opened it. A dump also makes the kernel reap expired entries at once (it emits their
/// DESTROY events).
#[derive(Debug)]
pub struct DumpSocket {
    sock: NlSocket,
    buf: Vec<u8>,
    seq: u32,
}

impl DumpSocket {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, ConntrackError> {
        let sock = NlSocket::open()?;
        // Different sockets' sequences need not differ; start off a clock for readable traces.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Self { sock, buf: vec![0; RECV_BUF_BYTES], seq })
    }

    /// Dumps the table, calling `f` for each entry as it arrives (for tables of millions).
    ///
    /// One pass: when it comes back [`DumpPass::interrupted`], `f` may have seen an inconsistent
    /// picture and the caller should redo the dump.
    pub fn dump_each(&mut self, f: &mut dyn FnMut(CtEntry)) -> Result<DumpPass, ConntrackError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let ty = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
        let req = parse::build_request(ty, NLM_F_REQUEST | NLM_F_DUMP, seq, libc::AF_UNSPEC as u8);
        self.sock.send(&req)?;
        let mut pass = DumpPass::default();
        loop {
            let n = match self.sock.recv(&mut self.buf, 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(os_error("reading a conntrack dump", e)),
            };
            if n > self.buf.len() {
                return Err(ConntrackError::Truncated { len: n, buf: self.buf.len() });
            }
            for msg in NlMsgs::new(&self.buf[..n]) {
                let msg = msg?;
                if msg.seq != seq {
                    // A leftover of an earlier dump that was abandoned on an error.
                    continue;
                }
                if msg.flags & NLM_F_DUMP_INTR != 0 {
                    pass.interrupted = true;
                }
                match msg.ty {
                    NLMSG_DONE => {
                        // A dump's DONE carries the dump's result (0 or a negative errno).
                        let errno = parse::payload_errno(msg.payload).unwrap_or(0);
                        if errno != 0 {
                            return Err(kernel_error("dumping the conntrack table", errno));
                        }
                        return Ok(pass);
                    }
                    NLMSG_ERROR => {
                        let errno = parse::payload_errno(msg.payload)?;
                        if errno != 0 {
                            return Err(kernel_error("dumping the conntrack table", errno));
                        }
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    ty => match parse::parse_ct_msg(ty, msg.payload) {
                        Ok(Some((_, e))) => {
                            pass.entries += 1;
                            f(e);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!("skipping a conntrack dump entry: {e}");
                            pass.unreadable += 1;
                        }
                    },
                }
            }
        }
    }

    /// Dumps the whole table into a vector, redoing a dump the kernel flags interrupted (up to
    /// 3 attempts).
    pub fn dump(&mut self) -> Result<Vec<CtEntry>, ConntrackError> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut entries = Vec::new();
            let pass = self.dump_each(&mut |e| entries.push(e))?;
            if !pass.interrupted {
                return Ok(entries);
            }
        }
        Err(ConntrackError::DumpInterrupted { attempts: DUMP_ATTEMPTS })
    }
}

/// Maps a kernel-reported errno (from an `NLMSG_ERROR`) to an error.
fn kernel_error(what: &'static str, errno: i32) -> ConntrackError {
    os_error(what, io::Error::from_raw_os_error(errno))
}

/// Dumps the conntrack table of the calling thread's network namespace (a one-off socket).
pub fn dump() -> Result<Vec<CtEntry>, ConntrackError> {
    DumpSocket::open()?.dump()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::conntrack::parse::tests::v4_udp_snat_destroy;

    /// What a scripted `recvmmsg` returns at each call.
    enum Step {
        Datagrams(Vec<Vec<u8>>),
        Errno(i32),
    }

    /// A scripted datagram source that records how it was called; EAGAIN once the script ends.
    #[derive(Default)]
    struct Script {
        steps: VecDeque<Step>,
        /// (datagrams asked for, flags) of every call.
        calls: Vec<(usize, libc::c_int)>,
    }

    impl Script {
        fn new(steps: Vec<Step>) -> Self {
            Self { steps: steps.into(), calls: Vec::new() }
        }
    }

    impl Datagrams for Script {
        fn recv_many(
            &mut self,
            buf: &mut [u8],
            slot: usize,
            lens: &mut [usize],
            flags: libc::c_int,
        ) -> io::Result<usize> {
            self.calls.push((lens.len(), flags));
            match self.steps.pop_front() {
                None => Err(io::Error::from_raw_os_error(libc::EAGAIN)),
                Some(Step::Errno(e)) => Err(io::Error::from_raw_os_error(e)),
                Some(Step::Datagrams(mut ds)) => {
                    // Like recvmmsg: what does not fit this call stays queued for the next.
                    if ds.len() > lens.len() {
                        let rest = ds.split_off(lens.len());
                        self.steps.push_front(Step::Datagrams(rest));
                    }
                    for (i, d) in ds.iter().enumerate() {
                        let n = d.len().min(slot);
                        buf[i * slot..i * slot + n].copy_from_slice(&d[..n]);
                        lens[i] = d.len();
                    }
                    Ok(ds.len())
                }
            }
        }
    }

    fn destroys(ports: std::ops::Range<u16>) -> Vec<Vec<u8>> {
        ports.map(v4_udp_snat_destroy).collect()
    }

    /// The inside ports of the entries, in order.
    fn ports(out: &[CtEntry]) -> Vec<u16> {
        out.iter().map(|e| u16::from_be(e.orig.src_port)).collect()
    }

    fn reader(max_batch: usize, wait: Wait) -> EventReader {
        EventReader::new(EventOptions { max_batch, wait, ..EventOptions::default() }, 1024)
    }

    fn overrun() -> Vec<u8> {
        parse::build_request(NLMSG_OVERRUN, 0, 0, 0)
    }

    #[test]
    fn a_batch_takes_many_datagrams_per_call_waits_only_for_the_first_and_ends_when_drained() {
        let mut r = reader(4096, Wait::Forever);
        let mut src =
            Script::new(vec![Step::Datagrams(destroys(1..4)), Step::Datagrams(destroys(4..6))]);
        let mut out = Vec::new();
        let st = r.recv_batch(&mut src, &mut out).expect("batch");
        assert_eq!(ports(&out), vec![1, 2, 3, 4, 5]);
        assert_eq!(st, RecvStatus { entries: 5, enobufs: 0, unreadable: 0, drained: true });
        assert_eq!(
            src.calls,
            vec![
                (EVENT_SLOTS, libc::MSG_WAITFORONE),
                (EVENT_SLOTS, libc::MSG_DONTWAIT),
                (EVENT_SLOTS, libc::MSG_DONTWAIT)
            ]
        );
        assert_eq!((r.stats.datagrams, r.stats.destroys), (5, 5));
        // A non-blocking reader never waits, not even for the first datagram.
        let mut r = reader(4096, Wait::NonBlocking);
        let mut src = Script::new(vec![]);
        let st = r.recv_batch(&mut src, &mut out).expect("batch");
        assert!(st.drained && st.entries == 0);
        assert_eq!(src.calls, vec![(EVENT_SLOTS, libc::MSG_DONTWAIT)]);
    }

    #[test]
    fn enobufs_is_counted_once_and_reading_goes_on_without_waiting() {
        let mut r = reader(4096, Wait::Timeout(Duration::from_millis(10)));
        // The overrun before anything was read, and one the kernel kept after a partial batch.
        let mut src = Script::new(vec![
            Step::Errno(libc::ENOBUFS),
            Step::Datagrams(destroys(1..3)),
            Step::Errno(libc::ENOBUFS),
            Step::Datagrams(destroys(3..4)),
        ]);
        let mut out = Vec::new();
        let st = r.recv_batch(&mut src, &mut out).expect("batch");
        assert_eq!(ports(&out), vec![1, 2, 3]);
        assert_eq!(st, RecvStatus { entries: 3, enobufs: 2, unreadable: 0, drained: true });
        assert!(st.needs_resync());
        let flags: Vec<_> = src.calls.iter().map(|c| c.1).collect();
        assert_eq!(
            flags,
            vec![
                libc::MSG_WAITFORONE,
                libc::MSG_DONTWAIT,
                libc::MSG_DONTWAIT,
                libc::MSG_DONTWAIT,
                libc::MSG_DONTWAIT
            ],
            "after ENOBUFS the queue is full: no waiting"
        );
        assert_eq!(r.stats.enobufs, 2);
    }

    #[test]
    fn an_overrun_message_counts_as_enobufs_and_an_interrupted_wait_is_retried() {
        let mut r = reader(4096, Wait::Forever);
        let mut dgrams = destroys(1..2);
        dgrams.push(overrun());
        dgrams.extend(destroys(2..3));
        let mut src = Script::new(vec![Step::Errno(libc::EINTR), Step::Datagrams(dgrams)]);
        let mut out = Vec::new();
        let st = r.recv_batch(&mut src, &mut out).expect("batch");
        assert_eq!(ports(&out), vec![1, 2]);
        assert_eq!(st, RecvStatus { entries: 2, enobufs: 1, unreadable: 0, drained: true });
        assert_eq!(
            src.calls[..2].iter().map(|c| c.1).collect::<Vec<_>>(),
            vec![libc::MSG_WAITFORONE, libc::MSG_WAITFORONE]
        );
        assert_eq!(r.stats.datagrams, 3);
    }

    #[test]
    fn a_truncated_datagram_is_unreadable_and_the_others_of_its_call_are_read() {
        let mut r = reader(4096, Wait::NonBlocking);
        let mut long = v4_udp_snat_destroy(2);
        long.resize(r.slot + 1, 0);
        let mut src = Script::new(vec![Step::Datagrams(vec![
            v4_udp_snat_destroy(1),
            long,
            v4_udp_snat_destroy(3),
        ])]);
        let mut out = Vec::new();
        let st = r.recv_batch(&mut src, &mut out).expect("batch");
        assert_eq!(ports(&out), vec![1, 3]);
        assert_eq!(st, RecvStatus { entries: 2, enobufs: 0, unreadable: 1, drained: true });
        assert_eq!((r.stats.datagrams, r.stats.unreadable), (3, 1));
    }

    #[test]
    fn max_batch_bounds_the_datagrams_across_calls_and_leaves_the_rest_queued() {
        let mut r = reader(70, Wait::NonBlocking);
        let mut src = Script::new(vec![Step::Datagrams(destroys(0..100))]);
        let mut out = Vec::new();
        let st = r.recv_batch(&mut src, &mut out).expect("batch");
        assert_eq!(out.len(), 70);
        assert!(!st.drained, "30 datagrams still queued");
        assert_eq!(src.calls.iter().map(|c| c.0).collect::<Vec<_>>(), vec![EVENT_SLOTS, 6]);
        out.clear();
        let st = r.recv_batch(&mut src, &mut out).expect("batch");
        assert_eq!(ports(&out), (70..100).collect::<Vec<_>>());
        assert!(st.drained);
    }

    #[test]
    fn other_socket_errors_are_returned() {
        let mut r = reader(4096, Wait::NonBlocking);
        let mut src = Script::new(vec![Step::Datagrams(destroys(1..2)), Step::Errno(libc::EBADF)]);
        let mut out = Vec::new();
        let err = r.recv_batch(&mut src, &mut out).expect_err("EBADF is fatal");
        assert!(matches!(err, ConntrackError::Io { .. }), "{err}");
    }

    /// The port id the kernel gave a bound netlink socket.
    fn port_id(s: &NlSocket) -> u32 {
        // SAFETY: sockaddr_nl is plain data.
        let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `addr` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockname(s.fd.as_raw_fd(), (&raw mut addr).cast::<libc::sockaddr>(), &mut len)
        };
        assert_eq!(rc, 0, "getsockname: {}", io::Error::last_os_error());
        addr.nl_pid
    }

    /// Counts the calls that reach the socket.
    struct Counting<'a>(&'a mut NlSocket, usize);

    impl Datagrams for Counting<'_> {
        fn recv_many(
            &mut self,
            buf: &mut [u8],
            slot: usize,
            lens: &mut [usize],
            flags: libc::c_int,
        ) -> io::Result<usize> {
            self.1 += 1;
            Datagrams::recv_many(self.0, buf, slot, lens, flags)
        }
    }

    #[test]
    #[cfg_attr(natrec_no_root, ignore = "NATREC_TESTS_NO_ROOT=1")]
    fn recvmmsg_on_a_netlink_socket_reads_64_datagrams_per_call_and_reports_full_lengths() {
        // One user socket sends datagrams to another (unicast needs CAP_NET_ADMIN).
        let mut rx = NlSocket::open().expect("receiving socket");
        let tx = NlSocket::open().expect("sending socket");
        // SAFETY: sockaddr_nl is plain data.
        let mut to: libc::sockaddr_nl = unsafe { zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        to.nl_pid = port_id(&rx);
        let mut long = v4_udp_snat_destroy(0);
        long.resize(1500, 0);
        let mut dgrams = vec![long];
        dgrams.extend(destroys(1..70));
        for d in &dgrams {
            // SAFETY: `d` and `to` are valid for reads of the lengths given.
            let n = unsafe {
                libc::sendto(
                    tx.fd.as_raw_fd(),
                    d.as_ptr().cast::<libc::c_void>(),
                    d.len(),
                    0,
                    (&raw const to).cast::<libc::sockaddr>(),
                    size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                panic!("sending a netlink datagram to our own socket (needs CAP_NET_ADMIN): {e}");
            }
        }
        let mut r = reader(4096, Wait::NonBlocking);
        let mut src = Counting(&mut rx, 0);
        let mut out = Vec::new();
        let st = r.recv_batch(&mut src, &mut out).expect("batch");
        assert_eq!(ports(&out), (1..70).collect::<Vec<_>>());
        assert_eq!(st, RecvStatus { entries: 69, enobufs: 0, unreadable: 1, drained: true });
        assert_eq!(r.stats.datagrams, 70);
        assert_eq!(src.1, 3, "64 datagrams, then 6, then EAGAIN");
    }
}
