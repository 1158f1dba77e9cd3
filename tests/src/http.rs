//! A minimal HTTP/1.0 client for the servers tests start on loopback (natrec's metrics
//! endpoint, Prometheus's API): one request per connection, the answer read to its end.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::lab::{LabError, Result};

/// A server's answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` from `addr`, with an Accept header if `accept` is given.
pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Result<Response> {
    let what = format!("GET http://{addr}{path}");
    let io = |source| LabError::Io { what: what.clone(), source };
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io)?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).map_err(io)?;
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").map_err(io)?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).map_err(io)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| LabError::Invalid(format!("{what}: no end of the head in {raw:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LabError::Invalid(format!("{what}: no status in {head:?}")))?;
    let content_type = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map_or(String::new(), |(_, v)| v.trim().to_owned());
    Ok(Response { status, content_type, body: body.to_owned() })
}

/// `s` percent-encoded for a URL's query.
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
