//! Traffic inside the lab, made with sockets created in the namespaces themselves (no external
//! tools): echo servers, TCP and UDP clients with chosen source ports, ICMP echo over ping
//! sockets. Each client returns a [`FlowDone`] saying what it did and when, as the client saw it.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use recorder::model::Proto;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::lab::{LabError, Netns, Result};

/// How long a client waits for an answer before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// `ip:port` as a socket address, for either family.
pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> LabError {
    move |source| LabError::Io { what, source }
}

/// What a client did: the flow as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowDone {
    /// TCP, UDP or ICMP.
    pub proto: Proto,
    /// The client's address and port (for ICMP, the port is the echo identifier).
    pub local: SocketAddr,
    /// The address and port the client sent to (port 0 for ICMP).
    pub remote: SocketAddr,
    /// Taken just before the first packet was sent.
    pub first_packet: Timestamp,
    /// Taken just after the first answer was received: the gateway had translated the first
    /// packet by then, so a recorded start must not be later.
    pub first_reply: Timestamp,
    /// Taken just after the last answer was received.
    pub last_packet: Timestamp,
}

/// An echo server (TCP or UDP) on threads; it records who talked to it and stops on drop.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens on `addr` (TCP) in `ns` and echoes every connection until dropped.
    pub fn tcp(ns: &Netns, addr: SocketAddr) -> Result<EchoServer> {
        let what = format!("TCP echo server on {addr} in {}", ns.name());
        let listener = ns
            .run_in(move || -> std::io::Result<TcpListener> {
                let sock =
                    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
                sock.set_reuse_address(true)?;
                sock.bind(&SockAddr::from(addr))?;
                // A deep backlog: clients may open connections faster than they are accepted.
                sock.listen(4096)?;
                // accept(2) honours SO_RCVTIMEO: the loop wakes up to check for stop.
                sock.set_read_timeout(Some(Duration::from_millis(50)))?;
                Ok(sock.into())
            })?
            .map_err(io(what))?;
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (s, p) = (stop.clone(), peers.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !s.load(Ordering::Relaxed) {
                // Err: the timeout (or a connection reset before it was accepted).
                if let Ok((stream, peer)) = listener.accept() {
                    p.lock().unwrap_or_else(PoisonError::into_inner).push(peer);
                    let s = s.clone();
                    conns.retain(|c| !c.is_finished());
                    conns.push(std::thread::spawn(move || echo_tcp(stream, &s)));
                }
            }
            for c in conns {
                // An echo connection that panicked has nothing left to clean up.
                let _ = c.join();
            }
        });
        Ok(EchoServer { addr, stop, peers, thread: Some(thread) })
    }

    /// Binds `addr` (UDP) in `ns` and echoes every datagram until dropped.
    pub fn udp(ns: &Netns, addr: SocketAddr) -> Result<EchoServer> {
        let sock = ns
            .run_in(move || UdpSocket::bind(addr))?
            .map_err(io(format!("binding a UDP echo server to {addr} in {}", ns.name())))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(io("setting a UDP read timeout".into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (s, p) = (stop.clone(), peers.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    p.lock().unwrap_or_else(PoisonError::into_inner).push(peer);
                    // A lost echo shows up as the client's timeout.
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        });
        Ok(EchoServer { addr, stop, peers, thread: Some(thread) })
    }

    /// The address it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The peers seen so far (one per TCP connection, one per UDP datagram), oldest first.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A panicked server thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}

fn echo_tcp(mut stream: TcpStream, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(Duration::from_millis(50))).is_err()
    {
        return;
    }
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// An open TCP connection made from inside a namespace.
#[derive(Debug)]
pub struct TcpFlow {
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    first_packet: Timestamp,
    first_reply: Timestamp,
    last_packet: Timestamp,
}

impl TcpFlow {
    /// Connects from `local` (port 0: any) to `remote` in `ns`, with `SO_REUSEADDR` so that a
    /// fixed source port can be used again.
    ///
    /// A fixed source port whose previous connection to the same remote is still closing makes
    /// connect(2) fail with "address not available"; that is retried every 20 ms for up to 2 s.
    pub fn open(ns: &Netns, local: SocketAddr, remote: SocketAddr) -> Result<TcpFlow> {
        let ns_name = ns.name().to_owned();
        ns.run_in(move || -> Result<TcpFlow> {
            let what = |step: &str| format!("TCP {step} {local} -> {remote} in {ns_name}");
            let retry_until = std::time::Instant::now() + Duration::from_secs(2);
            let (sock, first_packet) = loop {
                let sock =
                    Socket::new(Domain::for_address(remote), Type::STREAM, Some(Protocol::TCP))
                        .map_err(io(what("socket")))?;
                sock.set_reuse_address(true).map_err(io(what("SO_REUSEADDR")))?;
                sock.bind(&SockAddr::from(local)).map_err(io(what("bind")))?;
                let first_packet = Timestamp::now();
                match sock.connect_timeout(&SockAddr::from(remote), REPLY_TIMEOUT) {
                    Ok(()) => break (sock, first_packet),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::AddrNotAvailable
                            && local.port() != 0
                            && std::time::Instant::now() < retry_until =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(io(what("connect"))(e)),
                }
            };
            // The SYN-ACK is the first answer.
            let last_packet = Timestamp::now();
            let stream: TcpStream = sock.into();
            stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io(what("timeout")))?;
            let local = stream.local_addr().map_err(io(what("local address")))?;
            Ok(TcpFlow {
                stream,
                local,
                remote,
                first_packet,
                first_reply: last_packet,
                last_packet,
            })
        })?
    }

    /// Sends `rounds` messages and reads each echo back.
    pub fn exchange(&mut self, rounds: usize) -> Result<()> {
        let what = format!("TCP echo {} -> {}", self.local, self.remote);
        for i in 0..rounds {
            let msg = format!("natrec lab {i}\n");
            self.stream.write_all(msg.as_bytes()).map_err(io(what.clone()))?;
            let mut back = vec![0u8; msg.len()];
            self.stream.read_exact(&mut back).map_err(io(what.clone()))?;
            self.last_packet = Timestamp::now();
            if back != msg.as_bytes() {
                return Err(LabError::Invalid(format!(
                    "{what}: the echo differs from what was sent"
                )));
            }
        }
        Ok(())
    }

    /// The client's address and port.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// What the flow did so far.
    pub fn done(&self) -> FlowDone {
        FlowDone {
            proto: Proto::TCP,
            local: self.local,
            remote: self.remote,
            first_packet: self.first_packet,
            first_reply: self.first_reply,
            last_packet: self.last_packet,
        }
    }

    /// Closes the connection (FIN; the client side lingers in TIME_WAIT, which Linux lets a
    /// new connection from the same explicitly bound port take over, TCP timestamps being on)
    /// and says what it did.
    pub fn close(self) -> FlowDone {
        let done = self.done();
        drop(self.stream);
        done
    }

    /// Aborts the connection (RST: no TIME_WAIT, the source port is free at once) and says what
    /// it did.
    pub fn reset(self) -> Result<FlowDone> {
        let done = self.done();
        let sock = Socket::from(self.stream);
        sock.set_linger(Some(Duration::ZERO))
            .map_err(io(format!("SO_LINGER 0 on {} -> {}", done.local, done.remote)))?;
        drop(sock);
        Ok(done)
    }
}

/// Connects from `local` to the TCP echo server `remote`, exchanges `rounds` messages, closes.
pub fn tcp_exchange(
    ns: &Netns,
    local: SocketAddr,
    remote: SocketAddr,
    rounds: usize,
) -> Result<FlowDone> {
    let mut flow = TcpFlow::open(ns, local, remote)?;
    flow.exchange(rounds)?;
    Ok(flow.close())
}

/// Sends `rounds` datagrams from `local` (port 0: any) to the UDP echo server `remote` and reads
/// each answer.
pub fn udp_exchange(
    ns: &Netns,
    local: SocketAddr,
    remote: SocketAddr,
    rounds: usize,
) -> Result<FlowDone> {
    let ns_name = ns.name().to_owned();
    ns.run_in(move || -> Result<FlowDone> {
        let what = format!("UDP {local} -> {remote} in {ns_name}");
        let sock = Socket::new(Domain::for_address(remote), Type::DGRAM, Some(Protocol::UDP))
            .map_err(io(what.clone()))?;
        sock.set_reuse_address(true).map_err(io(what.clone()))?;
        sock.bind(&SockAddr::from(local)).map_err(io(what.clone()))?;
        let sock: UdpSocket = sock.into();
        sock.connect(remote).map_err(io(what.clone()))?;
        sock.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io(what.clone()))?;
        let local = sock.local_addr().map_err(io(what.clone()))?;
        let first_packet = Timestamp::now();
        let mut last_packet = first_packet;
        let mut first_reply = None;
        let mut buf = [0u8; 2048];
        for i in 0..rounds {
            let msg = format!("natrec lab {i}");
            sock.send(msg.as_bytes()).map_err(io(what.clone()))?;
            let n = sock.recv(&mut buf).map_err(io(format!("{what}: waiting for echo {i}")))?;
            last_packet = Timestamp::now();
            first_reply.get_or_insert(last_packet);
            if &buf[..n] != msg.as_bytes() {
                return Err(LabError::Invalid(format!(
                    "{what}: the echo differs from what was sent"
                )));
            }
        }
        Ok(FlowDone {
            proto: Proto::UDP,
            local,
            remote,
            first_packet,
            first_reply: first_reply.unwrap_or(last_packet),
            last_packet,
        })
    })?
}

/// Numbers the echo requests of this process (see [`ping`]).
static PING_PAYLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sends `count` ICMP (or ICMPv6) echo requests from `local` with echo identifier `ident` to
/// `remote` over a ping socket (the lab allows them in its namespaces) and waits for each reply.
pub fn ping(
    ns: &Netns,
    local: impl Into<IpAddr>,
    ident: u16,
    remote: impl Into<IpAddr>,
    count: u16,
) -> Result<FlowDone> {
    let (local, remote) = (local.into(), remote.into());
    let ns_name = ns.name().to_owned();
    // (socket domain, protocol, echo request type, echo reply type, natrec's protocol)
    let (domain, protocol, request, reply, proto) = if local.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4, 8, 0, Proto::ICMP)
    } else {
        (Domain::IPV6, Protocol::ICMPV6, 128, 129, Proto::ICMPV6)
    };
    ns.run_in(move || -> Result<FlowDone> {
        let what = format!("ICMP echo {local} id {ident} -> {remote} in {ns_name}");
        let sock = Socket::new(domain, Type::DGRAM, Some(protocol))
            .map_err(io(format!("{what}: ping socket (net.ipv4.ping_group_range?)")))?;
        // For a ping socket, the bound "port" is the echo identifier.
        sock.bind(&SockAddr::from(SocketAddr::new(local, ident)))
            .map_err(io(format!("{what}: bind")))?;
        sock.connect(&SockAddr::from(SocketAddr::new(remote, 0)))
            .map_err(io(format!("{what}: connect")))?;
        let sock: UdpSocket = sock.into();
        sock.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io(what.clone()))?;
        let first_packet = Timestamp::now();
        let mut last_packet = first_packet;
        let mut first_reply = None;
        let mut buf = [0u8; 2048];
        for seq in 0..count {
            let [s0, s1] = seq.to_be_bytes();
            // type (echo request), code 0, checksum (the kernel fills it), id (the kernel sets
            // the bound one), sequence, payload.
            let mut req = vec![request, 0, 0, 0, 0, 0, s0, s1];
            // A payload unique to the request: a capture pairs it across the gateway alone
            // (IPv6 has no identification field to tell two echoes of the same sequence apart).
            let n = PING_PAYLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            req.extend_from_slice(format!("natrec lab {n}").as_bytes());
            sock.send(&req).map_err(io(format!("{what}: send")))?;
            loop {
                let n =
                    sock.recv(&mut buf).map_err(io(format!("{what}: waiting for reply {seq}")))?;
                // An echo reply with our sequence number.
                if n >= 8 && buf[0] == reply && buf[6..8] == [s0, s1] {
                    break;
                }
            }
            last_packet = Timestamp::now();
            first_reply.get_or_insert(last_packet);
        }
        Ok(FlowDone {
            proto,
            local: SocketAddr::new(local, ident),
            remote: SocketAddr::new(remote, 0),
            first_packet,
            first_reply: first_reply.unwrap_or(last_packet),
            last_packet,
        })
    })?
}
