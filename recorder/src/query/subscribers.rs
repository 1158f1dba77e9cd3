//! The subscriber map: which account an inside address belongs to, from a CSV of
//! `prefix,account` lines (longest prefix wins, IPv4 and IPv6, `#` comments).
//!
//! ```text
//! # prefix,account
//! 10.0.1.0/24,acct-1001
//! 10.0.1.128/25,acct-1002
//! fd00:1::/48,acct-2001
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A subscriber map that could not be read; names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    #[error("reading subscriber map {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {problem}")]
    Line { path: PathBuf, line: usize, problem: String },
}

/// Prefixes of one address family, by prefix length, longest first.
#[derive(Debug, Default, Clone)]
struct Family {
    /// `(length, masked address → account)`, sorted by length, longest first.
    by_len: Vec<(u8, HashMap<u128, String>)>,
}

impl Family {
    fn insert(&mut self, len: u8, net: u128, account: String) -> Option<String> {
        let pos = match self.by_len.binary_search_by(|(l, _)| len.cmp(l)) {
            Ok(pos) => pos,
            Err(pos) => {
                self.by_len.insert(pos, (len, HashMap::new()));
                pos
            }
        };
        self.by_len[pos].1.insert(net, account)
    }

    fn lookup(&self, addr: u128, bits: u8) -> Option<&str> {
        self.by_len
            .iter()
            .find_map(|(len, nets)| nets.get(&mask(addr, *len, bits)).map(String::as_str))
    }
}

/// Keeps the top `len` of an address `bits` wide (held in the low bits of a `u128`).
fn mask(addr: u128, len: u8, bits: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let keep = u128::MAX >> (128 - u32::from(len)) << (u32::from(bits) - u32::from(len));
        addr & keep
    }
}

fn bits_of(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        // An IPv4-mapped IPv6 address belongs to the IPv4 subscriber.
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (u128::from(u32::from(v4)), 32),
            None => (u128::from(a), 128),
        },
    }
}

/// Inside prefix → account id, longest prefix wins.
#[derive(Debug, Default, Clone)]
pub struct SubscriberMap {
    v4: Family,
    v6: Family,
    len: usize,
}

impl SubscriberMap {
    /// Reads a map from a file.
    pub fn load(path: &Path) -> Result<Self, SubscriberError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SubscriberError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Reads a map from CSV text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, SubscriberError> {
        let mut map = SubscriberMap::default();
        let mut seen_data = false;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split_once('#').map_or(raw, |(l, _)| l).trim();
            if line.is_empty() {
                continue;
            }
            let err = |problem: String| SubscriberError::Line {
                path: origin.to_owned(),
                line: i + 1,
                problem,
            };
            let Some((prefix, account)) = line.split_once(',') else {
                return Err(err(format!("expected `prefix,account`, got {line:?}")));
            };
            let (prefix, account) = (prefix.trim(), account.trim());
            if !seen_data && prefix.eq_ignore_ascii_case("prefix") {
                seen_data = true; // a header row
                continue;
            }
            seen_data = true;
            if account.is_empty() || account.contains(',') {
                return Err(err(format!(
                    "expected one non-empty account id after the prefix, got {account:?}"
                )));
            }
            let (ip_s, len_s) =
                prefix.split_once('/').map_or((prefix, None), |(a, l)| (a, Some(l)));
            let ip: IpAddr = ip_s.parse().map_err(|_| {
                err(format!("expected an IPv4 or IPv6 prefix such as 10.0.1.0/24, got {prefix:?}"))
            })?;
            let (addr, bits) = match ip {
                IpAddr::V4(a) => (u128::from(u32::from(a)), 32u8),
                IpAddr::V6(a) => (u128::from(a), 128u8),
            };
            let len =
                match len_s {
                    None => bits,
                    Some(l) => l.parse::<u8>().ok().filter(|l| *l <= bits).ok_or_else(|| {
                        err(format!("expected a prefix length 0-{bits}, got {l:?}"))
                    })?,
                };
            if mask(addr, len, bits) != addr {
                return Err(err(format!(
                    "{prefix} has host bits set (expected the network address)"
                )));
            }
            let family = if bits == 32 { &mut map.v4 } else { &mut map.v6 };
            if let Some(previous) = family.insert(len, addr, account.to_owned()) {
                return Err(err(format!("{prefix} is listed twice (also for {previous})")));
            }
            map.len += 1;
        }
        Ok(map)
    }

    /// The account of the longest prefix that holds `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&str> {
        let (addr, bits) = bits_of(ip);
        if bits == 32 { self.v4.lookup(addr, 32) } else { self.v6.lookup(addr, 128) }
    }

    /// How many prefixes the map holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SubscriberMap, SubscriberError> {
        SubscriberMap::parse(text, Path::new("subs.csv"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn longest_prefix_wins_in_both_families() {
        let map = parse(
            "prefix,account\n# comment\n10.0.0.0/8,acct-big\n10.0.1.0/24,acct-1001 # trailing\n\
             10.0.1.128/25,acct-1002\n10.0.1.7,acct-host\nfd00:1::/48,acct-v6\n::/0,acct-v6-default\n",
        )
        .expect("map");
        assert_eq!(map.len(), 6);
        assert_eq!(map.lookup(ip("10.0.1.2")), Some("acct-1001"));
        assert_eq!(map.lookup(ip("10.0.1.200")), Some("acct-1002"));
        assert_eq!(map.lookup(ip("10.0.1.7")), Some("acct-host"));
        assert_eq!(map.lookup(ip("10.9.9.9")), Some("acct-big"));
        assert_eq!(map.lookup(ip("::ffff:10.0.1.2")), Some("acct-1001"));
        assert_eq!(map.lookup(ip("192.0.2.1")), None);
        assert_eq!(map.lookup(ip("fd00:1::5")), Some("acct-v6"));
        assert_eq!(map.lookup(ip("2001:db8::1")), Some("acct-v6-default"));
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("10.0.1.0/24,a\n10.0.1.0/33,b\n", "subs.csv:2:"),
            ("10.0.1.0/24\n", "subs.csv:1:"),
            ("# x\n\n10.0.1.5/24,a\n", "subs.csv:3:"),
            ("10.0.1.0/24,a\n10.0.1.0/24,b\n", "listed twice"),
            ("banana,a\n", "expected an IPv4 or IPv6 prefix"),
            ("10.0.0.0/8,\n", "non-empty account"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
