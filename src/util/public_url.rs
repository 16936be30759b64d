//! Public addresses (`--public-url`, `--public-webtransport-url`): where
//! browsers reach this node when that is not what its `Host` header and its
//! bound QUIC port say (a node behind NAT, an HTTP load balancer or CDN on the
//! platform's domain, a UDP load balancer).

use url::Url;

/// The configured public addresses; empty when none is set (links are then
/// built from the request's `Host` header and the bound QUIC port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PublicUrls {
    /// `--public-url`, without a trailing slash: `https://sync.example` or
    /// `https://www.example/sync` (a path prefix the proxy strips).
    http: Option<String>,
    /// `--public-webtransport-url`, as `https://host:port` (port always written).
    webtransport: Option<String>,
}

/// Checks `--public-url`: an absolute `http` or `https` URL with a host, no
/// user name or password, no query and no fragment; a path is a prefix (a
/// proxy that maps `https://www.example/sync/…` to this node's `/…`).
fn parse_public_url(s: &str) -> Result<Url, String> {
    let u = parse_absolute("--public-url", s)?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("--public-url {s:?}: the scheme must be http or https"));
    }
    Ok(u)
}

/// Checks `--public-webtransport-url`: an absolute `https` URL with a host and
/// at most a port (WebTransport is always HTTPS; the path is the endpoint's own,
/// so none may be given), no query and no fragment.
fn parse_public_webtransport_url(s: &str) -> Result<Url, String> {
    let u = parse_absolute("--public-webtransport-url", s)?;
    if u.scheme() != "https" {
        return Err(format!("--public-webtransport-url {s:?}: WebTransport needs an https URL"));
    }
    if u.path() != "/" {
        return Err(format!(
            "--public-webtransport-url {s:?}: no path (the WebTransport endpoint is /api/live-stream/{{room}}): give https://host:port"
        ));
    }
    Ok(u)
}

fn parse_absolute(flag: &str, s: &str) -> Result<Url, String> {
    let u = Url::parse(s.trim())
        .map_err(|e| format!("{flag} {s:?} is not an absolute URL ({e}); for example https://sync.example.com"))?;
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{flag} {s:?}: no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{flag} {s:?}: no user name or password"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{flag} {s:?}: no query (?…) or fragment (#…)"));
    }
    Ok(u)
}

/// `scheme://host[:port]` (the port only when given and not the scheme's default).
fn origin(u: &Url) -> String {
    let host = u.host_str().unwrap_or_default();
    match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    }
}

impl PublicUrls {
    /// From the two options (checked as [`parse_public_url`] and
    /// [`parse_public_webtransport_url`] do).
    pub(crate) fn new(http: Option<&str>, webtransport: Option<&str>) -> Result<PublicUrls, String> {
        let http = http.map(parse_public_url).transpose()?.map(|u| {
            let path = u.path().trim_end_matches('/');
            format!("{}{path}", origin(&u))
        });
        let webtransport = webtransport.map(parse_public_webtransport_url).transpose()?.map(|u| {
            let host = u.host_str().unwrap_or_default();
            format!("https://{host}:{}", u.port_or_known_default().unwrap_or(443))
        });
        Ok(PublicUrls { http, webtransport })
    }

    /// The public HTTP base (`https://sync.example`, no trailing slash), if set.
    pub(crate) fn http(&self) -> Option<&str> {
        self.http.as_deref()
    }

    /// The public WebSocket base: the HTTP base with `ws`/`wss`, if set.
    pub(crate) fn websocket(&self) -> Option<String> {
        let http = self.http.as_deref()?;
        Some(match http.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}", http.strip_prefix("http://").unwrap_or(http)),
        })
    }

    /// The public WebTransport base (`https://host:port`): the explicit one;
    /// else, with only a public HTTP URL, its host at `quic_port`; else none.
    pub(crate) fn webtransport(&self, quic_port: u16) -> Option<String> {
        if let Some(wt) = &self.webtransport {
            return Some(wt.clone());
        }
        let u = Url::parse(self.http.as_deref()?).ok()?;
        Some(format!("https://{}:{quic_port}", u.host_str()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_absolute_http_urls_without_query_or_fragment() {
        assert!(parse_public_url("https://sync.example").is_ok());
        assert!(parse_public_url("http://10.0.0.5:8080/sync/").is_ok());
        for bad in [
            "sync.example",
            "/sync",
            "ftp://sync.example",
            "https://sync.example/?a=1",
            "https://sync.example/#x",
            "https://user:pw@sync.example",
            "https://",
        ] {
            let e = parse_public_url(bad).unwrap_err();
            assert!(e.starts_with("--public-url"), "{bad}: {e}");
        }
        assert!(parse_public_webtransport_url("https://sync.example:443").is_ok());
        assert!(parse_public_webtransport_url("https://[2001:db8::1]:4433/").is_ok());
        for bad in ["http://sync.example:4433", "https://sync.example/wt", "https://sync.example?x", "sync.example:443"]
        {
            let e = parse_public_webtransport_url(bad).unwrap_err();
            assert!(e.starts_with("--public-webtransport-url"), "{bad}: {e}");
        }
    }

    #[test]
    fn bases_are_normalized_and_webtransport_follows_the_public_host() {
        let none = PublicUrls::new(None, None).unwrap();
        assert_eq!((none.http(), none.websocket(), none.webtransport(4433)), (None, None, None));

        let p = PublicUrls::new(Some("https://Sync.Example/"), None).unwrap();
        assert_eq!(p.http(), Some("https://sync.example"));
        assert_eq!(p.websocket().as_deref(), Some("wss://sync.example"));
        assert_eq!(p.webtransport(4433).as_deref(), Some("https://sync.example:4433"));

        let p = PublicUrls::new(Some("http://www.example:8080/sync/"), Some("https://wt.example:443")).unwrap();
        assert_eq!(p.http(), Some("http://www.example:8080/sync"));
        assert_eq!(p.websocket().as_deref(), Some("ws://www.example:8080/sync"));
        assert_eq!(p.webtransport(4433).as_deref(), Some("https://wt.example:443"));

        let p = PublicUrls::new(None, Some("https://[2001:db8::1]")).unwrap();
        assert_eq!(p.http(), None);
        assert_eq!(p.webtransport(4433).as_deref(), Some("https://[2001:db8::1]:443"));
        assert!(PublicUrls::new(Some("https://x.example?q"), None).is_err());
    }
}
