//! CIDR blocks and the `--trusted-proxies` list.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address (`127.0.0.1`
/// is `127.0.0.1/32`). IPv4-mapped IPv6 addresses match their IPv4 blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this block.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (bytes, rest) = (usize::from(bits / 8), bits % 8);
    if a[..bytes] != b[..bytes] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[bytes] & mask == b[bytes] & mask
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not a CIDR block (like 10.0.0.0/8, 127.0.0.1/32 or ::1/128)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u8>().map_err(|_| bad())?,
            Some(_) => return Err(bad()),
            None => max,
        };
        if prefix > max {
            return Err(format!("{s:?}: the prefix length is above {max}"));
        }
        let cidr = Cidr { addr, prefix };
        // Host bits set (`10.1.2.3/8`) is almost always a typo for another block.
        if !cidr.contains_all_of(addr) {
            return Err(format!("{s:?} has host bits set (did you mean {}?)", cidr.network()));
        }
        Ok(cidr)
    }
}

impl Cidr {
    fn network(&self) -> Cidr {
        let clear = |bytes: &mut [u8]| {
            for (i, b) in bytes.iter_mut().enumerate() {
                let from = i * 8;
                let keep = usize::from(self.prefix).saturating_sub(from).min(8);
                *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            }
        };
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mut o = a.octets();
                clear(&mut o);
                IpAddr::from(o)
            }
            IpAddr::V6(a) => {
                let mut o = a.octets();
                clear(&mut o);
                IpAddr::from(o)
            }
        };
        Cidr { addr, prefix: self.prefix }
    }

    fn contains_all_of(&self, addr: IpAddr) -> bool {
        self.network().addr == addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `--trusted-proxies`: the proxies and load balancers whose forwarding
/// headers (and PROXY protocol headers) say who the client is. Empty: none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ListValue")]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated CIDR blocks; empty items are skipped.
    fn from_str(s: &str) -> Result<Self, String> {
        split_list(s).map(str::parse).collect::<Result<_, _>>().map(TrustedProxies)
    }
}

impl TryFrom<ListValue> for TrustedProxies {
    type Error = String;

    fn try_from(v: ListValue) -> Result<Self, String> {
        v.items().iter().flat_map(|s| split_list(s)).map(str::parse).collect::<Result<_, _>>().map(TrustedProxies)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&items.join(","))
    }
}

/// The non-empty, trimmed items of a comma-separated list.
pub(super) fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|i| !i.is_empty())
}

/// A list option in a TOML file: an array of strings, or one
/// comma-separated string (as in the flag and the variable).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum ListValue {
    /// `["a", "b"]`
    Array(Vec<String>),
    /// `"a,b"`
    One(String),
}

impl ListValue {
    pub(super) fn items(self) -> Vec<String> {
        match self {
            ListValue::Array(v) => v,
            ListValue::One(s) => vec![s],
        }
    }
}

/// As a list of CIDR blocks, as a file writes it.
impl serde::Serialize for TrustedProxies {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_and_no_others() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.0.0.1")) && c.contains(ip("10.255.255.255")));
        assert!(!c.contains(ip("11.0.0.0")) && !c.contains(ip("9.255.255.255")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped addresses match IPv4 blocks");
        assert!(!c.contains(ip("::1")));
        let c: Cidr = "172.16.0.0/12".parse().unwrap();
        assert!(c.contains(ip("172.31.255.1")) && !c.contains(ip("172.32.0.1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("2001:db8::1")));
        let lo6: Cidr = "::1/128".parse().unwrap();
        assert!(lo6.contains(ip("::1")) && !lo6.contains(ip("::2")));
    }

    #[test]
    fn bad_blocks_are_refused_with_a_reason() {
        for bad in
            ["", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0/8", "host.example/8", "10.0.0.0/-1", "10.0.0.0/8/8"]
        {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
        let e = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
        assert!(e.contains("10.0.0.0/8"), "{e}");
    }

    #[test]
    fn lists_parse_from_flags_and_toml() {
        let l: TrustedProxies = "10.0.0.0/8, 127.0.0.1/32,::1/128,".parse().unwrap();
        assert_eq!(l.to_string(), "10.0.0.0/8,127.0.0.1/32,::1/128");
        assert!(l.contains(ip("10.9.9.9")) && l.contains(ip("::1")) && !l.contains(ip("192.168.0.1")));
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        assert!("10.0.0.0/8,nope".parse::<TrustedProxies>().is_err());
        #[derive(Deserialize)]
        struct T {
            p: TrustedProxies,
        }
        let t: T = toml::from_str(r#"p = ["10.0.0.0/8", "::1"]"#).unwrap();
        assert_eq!(t.p.to_string(), "10.0.0.0/8,::1/128");
        let t: T = toml::from_str(r#"p = "10.0.0.0/8,::1""#).unwrap();
        assert_eq!(t.p.to_string(), "10.0.0.0/8,::1/128");
        assert!(toml::from_str::<T>(r#"p = ["10.0.0.0/99"]"#).is_err());
    }
}
