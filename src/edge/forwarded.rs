//! The client's address behind trusted proxies: `X-Forwarded-For` and
//! `Forwarded` (RFC 7239 `for=`).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use axum::http::header::FORWARDED;

use super::TrustedProxies;

/// The `X-Forwarded-For` header.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address as `peer` (the address that connected) and its
/// forwarding headers say.
///
/// Only a peer in `trusted` is believed. Its list (`X-Forwarded-For`, or
/// `Forwarded` when there is no `X-Forwarded-For`) is read right to left: each
/// address was appended by the hop before it; the first one that is not
/// itself a trusted proxy is the client (what any hop left of it wrote could
/// be made up by the client). If every address is trusted, the left-most is
/// the client; an item that is not an address (`unknown`, an obfuscated
/// name, garbage) ends the walk at the last address read.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let xff: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let items: Vec<Option<IpAddr>> = if !xff.is_empty() {
        xff.into_iter().map(parse_node).collect()
    } else {
        headers.get_all(FORWARDED).iter().flat_map(|v| forwarded_for(v.as_bytes())).collect()
    };
    let mut client = peer;
    for item in items.into_iter().rev() {
        let Some(ip) = item else { break };
        client = ip.to_canonical();
        if !trusted.contains(client) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:5678`.
pub(crate) fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|v6| v6.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The `for=` of each element of a `Forwarded` header value, in order:
/// `Some(ip)`, or `None` for an element whose `for` is missing, `unknown`,
/// obfuscated or malformed.
pub(crate) fn forwarded_for(value: &[u8]) -> Vec<Option<IpAddr>> {
    let Ok(value) = std::str::from_utf8(value) else {
        return vec![None];
    };
    split_outside_quotes(value, ',')
        .into_iter()
        .filter(|e| !e.trim().is_empty())
        .map(|element| {
            split_outside_quotes(element, ';').into_iter().find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| unquote(v.trim()))
            })
        })
        .map(|v| v.and_then(|v| parse_node(&v)))
        .collect()
}

/// `s` split at `sep`, except inside double quotes (with `\` escapes).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A token, or a quoted string without its quotes and escapes.
fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
            }
            out
        }
        None => v.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn trusted(s: &str) -> TrustedProxies {
        s.parse().unwrap()
    }

    #[test]
    fn nodes_parse_with_or_without_ports() {
        assert_eq!(parse_node("203.0.113.7"), Some(ip("203.0.113.7")));
        assert_eq!(parse_node(" 203.0.113.7:4711 "), Some(ip("203.0.113.7")));
        assert_eq!(parse_node("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        for bad in ["unknown", "_hidden", "", "1.2.3", "[1.2.3.4]", "example.com"] {
            assert_eq!(parse_node(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn forwarded_for_reads_each_element() {
        let got = forwarded_for(br#"for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711""#);
        assert_eq!(got, vec![Some(ip("192.0.2.60")), Some(ip("2001:db8:cafe::17"))]);
        assert_eq!(forwarded_for(b"for=unknown, for=198.51.100.17"), vec![None, Some(ip("198.51.100.17"))]);
        assert_eq!(forwarded_for(b"proto=https;by=10.0.0.1"), vec![None]);
        // A quoted comma or semicolon does not split.
        assert_eq!(forwarded_for(br#"by="a,b;c";for=198.51.100.1"#), vec![Some(ip("198.51.100.1"))]);
        assert_eq!(forwarded_for(b"for=\"198.51.100.2\""), vec![Some(ip("198.51.100.2"))]);
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let h = headers(&[("x-forwarded-for", "198.51.100.1"), ("forwarded", "for=198.51.100.2")]);
        assert_eq!(client_ip(ip("203.0.113.5"), &h, &trusted("10.0.0.0/8")), ip("203.0.113.5"));
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &TrustedProxies::default()), ip("10.0.0.5"));
        assert_eq!(client_ip(ip("::ffff:203.0.113.5"), &h, &trusted("10.0.0.0/8")), ip("203.0.113.5"));
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let t = trusted("10.0.0.0/8,127.0.0.1");
        // The client spoofed the first entry; the load balancer appended the real one.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.3")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &t), ip("198.51.100.7"));
        // Several header lines are one list.
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "198.51.100.8:5555")]);
        assert_eq!(client_ip(ip("10.1.1.1"), &h, &t), ip("198.51.100.8"));
        // All trusted: the left-most.
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.3")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &t), ip("10.0.0.9"));
        // Garbage ends the walk at the last address read.
        let h = headers(&[("x-forwarded-for", "198.51.100.1, garbage, 10.0.0.4")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &t), ip("10.0.0.4"));
        // No header: the peer.
        assert_eq!(client_ip(ip("127.0.0.1"), &HeaderMap::new(), &t), ip("127.0.0.1"));
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let t = trusted("10.0.0.0/8");
        let h = headers(&[("forwarded", "for=1.1.1.1, for=\"[2001:db8::9]:80\";proto=https, for=10.0.0.2")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("2001:db8::9"));
        let h = headers(&[("forwarded", "for=198.51.100.3"), ("x-forwarded-for", "198.51.100.4")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("198.51.100.4"), "X-Forwarded-For wins");
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
    }
}
