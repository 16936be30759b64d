//! The HTTP edge's small parts, below everything else: who the client is
//! behind trusted proxies ([`forwarded`], [`proxy_protocol`], the
//! `--trusted-proxies` list in [`cidr`]), and which browser origins may call
//! the API (`--cors-origins`). The listener that uses them is
//! `http::listener`; the CORS layer and the access log are in `http::edge`.

pub(crate) mod cidr;
pub(crate) mod forwarded;
pub(crate) mod proxy_protocol;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;

pub use cidr::TrustedProxies;
use cidr::{ListValue, split_list};

/// `--cors-origins`: the browser origins (`https://www.platform.example`)
/// whose pages may call the REST API and open WebSockets, or `*` (any; only
/// with `--dev`). Empty: no CORS headers, and any origin may open a WebSocket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ListValue")]
pub struct CorsOrigins {
    origins: Vec<String>,
    any: bool,
}

impl CorsOrigins {
    /// Whether no origin is configured.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty() && !self.any
    }

    /// Whether `*` was given.
    pub fn is_any(&self) -> bool {
        self.any
    }

    /// The configured origins (normalized: lowercase, no default port).
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// Whether a request with `Origin: origin` is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Whether a WebSocket upgrade with these headers may proceed: requests
    /// without `Origin` (not from a browser) always; with no list, any
    /// origin (the behaviour before `--cors-origins`); otherwise an origin of
    /// the list, or the server's own (the `Origin` names the `Host`: pages
    /// served by this server, like the demo pages).
    pub fn allows_upgrade(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        if self.is_empty() {
            return true;
        }
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.allows(origin) {
            return true;
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let authority = origin.split_once("://").map(|(_, a)| a);
        matches!((authority, host), (Some(a), Some(h)) if !a.is_empty() && a.eq_ignore_ascii_case(h))
    }

    fn parse_items<'a>(items: impl Iterator<Item = &'a str>) -> Result<CorsOrigins, String> {
        let mut out = CorsOrigins::default();
        for item in items {
            if item == "*" {
                out.any = true;
            } else {
                out.origins.push(normalize_origin(item)?);
            }
        }
        Ok(out)
    }
}

/// `https://Host.Example:443/` → `https://host.example`; refuses what a
/// browser never sends as an `Origin` (paths, queries, other schemes).
fn normalize_origin(s: &str) -> Result<String, String> {
    let bad =
        |why: &str| format!("{s:?} is not an origin ({why}); write scheme://host[:port], like https://www.example.com");
    let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme is not http or https"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest).to_ascii_lowercase();
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ', '*']) {
        return Err(bad("it has a path, a query, credentials or a wildcard"));
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    let valid = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok() && (port.is_empty() || valid_port(port.strip_prefix(':')))
        }),
        None => {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            !host.is_empty()
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && port.is_none_or(|p| valid_port(Some(p)))
        }
    };
    if !valid {
        return Err(bad("bad host or port"));
    }
    Ok(format!("{scheme}://{authority}"))
}

fn valid_port(p: Option<&str>) -> bool {
    p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok())
}

impl FromStr for CorsOrigins {
    type Err = String;

    /// Comma-separated origins, or `*`.
    fn from_str(s: &str) -> Result<Self, String> {
        CorsOrigins::parse_items(split_list(s))
    }
}

impl TryFrom<ListValue> for CorsOrigins {
    type Error = String;

    fn try_from(v: ListValue) -> Result<Self, String> {
        let items = v.items();
        CorsOrigins::parse_items(items.iter().flat_map(|s| split_list(s)))
    }
}

impl fmt::Display for CorsOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<&str> = self.origins.iter().map(String::as_str).collect();
        if self.any {
            items.insert(0, "*");
        }
        f.write_str(&items.join(","))
    }
}

/// The client's address: the connection's peer (or the PROXY header's
/// source), or, from a trusted proxy, the address its forwarding headers
/// give (with the peer's port). What limits and logs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// Middleware (outermost on the router): resolves the [`ClientAddr`] of each
/// request from its `ConnectInfo` and headers and stores it in the request.
pub(crate) async fn resolve_client(
    State(trusted): State<Arc<TrustedProxies>>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let ip = forwarded::client_ip(peer.ip(), req.headers(), &trusted);
        req.extensions_mut().insert(ClientAddr(SocketAddr::new(ip, peer.port())));
    }
    next.run(req).await
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = (StatusCode, &'static str);

    /// The address [`resolve_client`] stored, or else the connection's peer.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(addr) = parts.extensions.get::<ClientAddr>() {
            return Ok(*addr);
        }
        match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(peer)) => Ok(ClientAddr(SocketAddr::new(peer.ip().to_canonical(), peer.port()))),
            None => Err((StatusCode::INTERNAL_SERVER_ERROR, "no client address")),
        }
    }
}

/// As a list of origins (`*` included when given), as a file writes it.
impl serde::Serialize for CorsOrigins {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let any = self.any.then_some("*");
        s.collect_seq(any.into_iter().chain(self.origins.iter().map(String::as_str)))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn origins_are_normalized_and_bad_ones_refused() {
        let o: CorsOrigins =
            "https://WWW.Platform.example/, http://localhost:3000,https://a.example:443,http://[::1]:8080"
                .parse()
                .unwrap();
        assert_eq!(
            o.origins(),
            ["https://www.platform.example", "http://localhost:3000", "https://a.example", "http://[::1]:8080"]
        );
        assert!(o.allows("https://www.platform.example") && o.allows("http://localhost:3000"));
        assert!(!o.allows("http://www.platform.example") && !o.allows("https://evil.example") && !o.allows("null"));
        assert!(!o.is_any() && !o.is_empty());
        let any: CorsOrigins = "*".parse().unwrap();
        assert!(any.is_any() && any.allows("https://anything.example"));
        assert!("".parse::<CorsOrigins>().unwrap().is_empty());
        for bad in [
            "www.example.com",
            "ftp://x.example",
            "https://x.example/path",
            "https://*.example.com",
            "https://x.example:99999",
            "https://user@x.example",
            "https://",
        ] {
            let e = bad.parse::<CorsOrigins>().unwrap_err();
            assert!(e.contains("scheme://host"), "{bad}: {e}");
        }
        #[derive(Deserialize)]
        struct T {
            o: CorsOrigins,
        }
        let t: T = toml::from_str(r#"o = ["https://a.example", "https://b.example"]"#).unwrap();
        assert_eq!(t.o.to_string(), "https://a.example,https://b.example");
        assert!(toml::from_str::<T>(r#"o = ["a.example"]"#).is_err());
    }

    #[test]
    fn upgrades_check_the_origin_only_when_origins_are_configured() {
        let h = |origin: Option<&str>, host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            h
        };
        let none = CorsOrigins::default();
        assert!(none.allows_upgrade(&h(Some("https://evil.example"), "sync.example")));
        let list: CorsOrigins = "https://www.platform.example".parse().unwrap();
        assert!(list.allows_upgrade(&h(Some("https://www.platform.example"), "sync.example")));
        assert!(list.allows_upgrade(&h(None, "sync.example")), "no Origin: not a browser");
        assert!(!list.allows_upgrade(&h(Some("https://evil.example"), "sync.example")));
        assert!(!list.allows_upgrade(&h(Some("null"), "sync.example")));
        assert!(list.allows_upgrade(&h(Some("http://127.0.0.1:8080"), "127.0.0.1:8080")), "same origin");
        assert!(!list.allows_upgrade(&h(Some("http://127.0.0.1:9090"), "127.0.0.1:8080")));
        let any: CorsOrigins = "*".parse().unwrap();
        assert!(any.allows_upgrade(&h(Some("https://evil.example"), "sync.example")));
    }
}
