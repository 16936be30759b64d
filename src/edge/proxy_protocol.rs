//! The PROXY protocol (HAProxy's `proxy-protocol.txt`): the header a load
//! balancer sends before a connection's own bytes to say whom it carries.
//! Version 2 (binary) and version 1 (text) are read; nothing past the header
//! is consumed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The twelve bytes that start a version 2 header.
pub(crate) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 header, CRLF included.
const V1_MAX: usize = 107;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyHeader {
    /// A proxied connection from `source` to `destination`.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// The proxy speaks for itself (health checks: `LOCAL`), or the
    /// addresses are of an unknown or non-IP family: use the socket's.
    Local,
}

impl ProxyHeader {
    /// The client's address, if the header names one.
    pub(crate) fn source(&self) -> Option<SocketAddr> {
        match self {
            ProxyHeader::Proxied { source, .. } => Some(*source),
            ProxyHeader::Local => None,
        }
    }
}

/// Why a header was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// The connection ended or failed before the header was complete.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The first bytes are not a PROXY header.
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxy,
    /// A header that does not follow the protocol.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

/// Reads one PROXY header (v2 or v1) from the start of `r`, and not a byte more.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<ProxyHeader, ProxyError> {
    // Both versions are at least 12 bytes long ("PROXY UNKNOWN\r\n" is 15).
    let mut start = [0u8; 12];
    r.read_exact(&mut start).await?;
    if start == V2_SIGNATURE {
        let mut fixed = [0u8; 4];
        r.read_exact(&mut fixed).await?;
        let len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        let mut rest = vec![0u8; len];
        r.read_exact(&mut rest).await?;
        return parse_v2(fixed[0], fixed[1], &rest);
    }
    if !start.starts_with(b"PROXY ") {
        return Err(ProxyError::NotProxy);
    }
    let mut line = start.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyError::Malformed("a version 1 line longer than 107 bytes"));
        }
        line.push(r.read_u8().await?);
    }
    parse_v1(&line)
}

/// A version 2 header after its signature: the version and command byte, the
/// family and protocol byte, and the address block (with any TLVs).
pub(crate) fn parse_v2(ver_cmd: u8, family: u8, block: &[u8]) -> Result<ProxyHeader, ProxyError> {
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("not version 2"));
    }
    match ver_cmd & 0x0f {
        0x0 => return Ok(ProxyHeader::Local),
        0x1 => {}
        _ => return Err(ProxyError::Malformed("unknown command")),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match family >> 4 {
        // AF_INET
        0x1 => {
            let b = block.get(..12).ok_or(ProxyError::Malformed("IPv4 address block too short"))?;
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(ip(&b[0..4]), port(&b[8..10])),
                destination: SocketAddr::new(ip(&b[4..8]), port(&b[10..12])),
            })
        }
        // AF_INET6
        0x2 => {
            let b = block.get(..36).ok_or(ProxyError::Malformed("IPv6 address block too short"))?;
            let ip = |b: &[u8]| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes")));
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(ip(&b[0..16]), port(&b[32..34])),
                destination: SocketAddr::new(ip(&b[16..32]), port(&b[34..36])),
            })
        }
        // AF_UNSPEC, AF_UNIX: no IP address to use.
        0x0 | 0x3 => Ok(ProxyHeader::Local),
        _ => Err(ProxyError::Malformed("unknown address family")),
    }
}

/// A version 1 line, CRLF included: `PROXY TCP4 src dst sport dport\r\n`,
/// `PROXY TCP6 …` or `PROXY UNKNOWN …`.
pub(crate) fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("version 1 line is not ASCII"))?;
    let line = line.strip_suffix("\r\n").ok_or(ProxyError::Malformed("version 1 line without CRLF"))?;
    let mut parts = line.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyError::NotProxy);
    }
    let v6 = match parts.next() {
        Some("TCP4") => false,
        Some("TCP6") => true,
        Some("UNKNOWN") => return Ok(ProxyHeader::Local),
        _ => return Err(ProxyError::Malformed("version 1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Malformed("version 1 line needs two addresses and two ports"));
    };
    let addr = |s: &str| -> Result<IpAddr, ProxyError> {
        let ip: IpAddr = s.parse().map_err(|_| ProxyError::Malformed("bad version 1 address"))?;
        if ip.is_ipv6() != v6 {
            return Err(ProxyError::Malformed("version 1 address of the wrong family"));
        }
        Ok(ip)
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        // Decimal without leading zeros, as the spec says.
        if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProxyError::Malformed("bad version 1 port"));
        }
        s.parse().map_err(|_| ProxyError::Malformed("bad version 1 port"))
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(addr(src)?, port(sport)?),
        destination: SocketAddr::new(addr(dst)?, port(dport)?),
    })
}

/// A version 2 `PROXY` header for `source` → `destination` (both of one
/// family), with `tlv` appended to the address block.
#[cfg(test)]
fn encode_v2(source: SocketAddr, destination: SocketAddr, tlv: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            0x11
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            block.extend_from_slice(&v6(s).octets());
            block.extend_from_slice(&v6(d).octets());
            0x21
        }
    };
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&destination.port().to_be_bytes());
    block.extend_from_slice(tlv);
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    out.push(family);
    out.extend_from_slice(&u16::try_from(block.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&block);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Reads a header from `bytes`; returns it and what is left after it.
    async fn read(bytes: &[u8]) -> (Result<ProxyHeader, ProxyError>, Vec<u8>) {
        let mut r = bytes;
        let h = read_header(&mut r).await;
        (h, r.to_vec())
    }

    #[tokio::test]
    async fn v2_ipv4_and_ipv6_headers_give_their_addresses_and_nothing_more_is_read() {
        let mut bytes = encode_v2(sa("203.0.113.7:51000"), sa("10.0.0.1:443"), &[]);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (h, rest) = read(&bytes).await;
        assert_eq!(
            h.unwrap(),
            ProxyHeader::Proxied { source: sa("203.0.113.7:51000"), destination: sa("10.0.0.1:443") }
        );
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");

        // With a TLV (an AWS-style vendor extension) after the addresses.
        let bytes = encode_v2(sa("[2001:db8::7]:4000"), sa("[2001:db8::1]:8080"), &[0xEA, 0x00, 0x02, b'v', b'1']);
        let (h, rest) = read(&bytes).await;
        assert_eq!(h.unwrap().source(), Some(sa("[2001:db8::7]:4000")));
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn v2_local_and_unspecified_headers_use_the_socket_address() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(read(&local).await.0.unwrap(), ProxyHeader::Local);
        let mut unix = V2_SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0x00, 0xd8]);
        unix.extend_from_slice(&[0u8; 216]);
        assert_eq!(read(&unix).await.0.unwrap(), ProxyHeader::Local);
    }

    #[tokio::test]
    async fn malformed_v2_headers_are_refused() {
        let good = encode_v2(sa("203.0.113.7:1"), sa("10.0.0.1:2"), &[]);
        let with = |i: usize, b: u8| {
            let mut v = good.clone();
            v[i] = b;
            v
        };
        // Version 1 in the version nibble, an unknown command, an unknown family.
        for bad in [with(12, 0x11), with(12, 0x2F), with(13, 0x51)] {
            assert!(matches!(read(&bad).await.0, Err(ProxyError::Malformed(_))), "{bad:?}");
        }
        // An address block shorter than its family needs.
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4]);
        assert!(matches!(read(&short).await.0, Err(ProxyError::Malformed(_))));
        // Cut short: the length promises more than arrives.
        assert!(matches!(read(&good[..good.len() - 1]).await.0, Err(ProxyError::Io(_))));
        // A broken signature.
        assert!(matches!(read(&with(3, b'x')).await.0, Err(ProxyError::NotProxy)));
    }

    #[tokio::test]
    async fn v1_lines_are_read() {
        let (h, rest) = read(b"PROXY TCP4 198.51.100.22 10.0.0.1 35646 80\r\nGET").await;
        assert_eq!(
            h.unwrap(),
            ProxyHeader::Proxied { source: sa("198.51.100.22:35646"), destination: sa("10.0.0.1:80") }
        );
        assert_eq!(rest, b"GET");
        let (h, _) = read(b"PROXY TCP6 2001:db8::22 2001:db8::1 35646 443\r\n").await;
        assert_eq!(h.unwrap().source(), Some(sa("[2001:db8::22]:35646")));
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.0.unwrap(), ProxyHeader::Local);
        assert_eq!(read(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").await.0.unwrap(), ProxyHeader::Local);
    }

    #[tokio::test]
    async fn malformed_v1_lines_and_other_protocols_are_refused() {
        for bad in [
            &b"PROXY TCP4 198.51.100.22 10.0.0.1 35646\r\n"[..],
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 198.51.100.22 10.0.0.1 035646 80\r\n",
            b"PROXY TCP4 198.51.100.22 10.0.0.1 99999 80\r\n",
            b"PROXY UDP4 198.51.100.22 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 198.51.100.22  10.0.0.1 1 2\r\n",
        ] {
            assert!(matches!(read(bad).await.0, Err(ProxyError::Malformed(_))), "{}", String::from_utf8_lossy(bad));
        }
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        assert!(matches!(read(long.as_bytes()).await.0, Err(ProxyError::Malformed(_))));
        assert!(matches!(read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.0, Err(ProxyError::NotProxy)));
        assert!(matches!(read(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00").await.0, Err(ProxyError::NotProxy)));
        assert!(matches!(read(b"PROXY").await.0, Err(ProxyError::Io(_))));
    }
}
