//! JSON Web Key Sets (RFC 7517) fetched from the identity provider
//! (`--jwt-jwks-url`): RSA keys for RS256 and EC P-256 keys for ES256, picked
//! by the token header's `kid`.
//!
//! The set is fetched once at start, then every `--jwt-jwks-refresh-ms`, and
//! again when a token names a `kid` the set lacks (at most once per
//! [`UNKNOWN_KID_INTERVAL`], so made-up `kid`s cannot make us hammer the
//! provider). A fetch that fails (unreachable, not 200, not a key set, no
//! usable key) keeps the last good set; it is logged and counted in
//! `lockstep_jwks_refresh_failures_total`. A good fetch replaces the set: a
//! key the provider no longer lists is no longer accepted. Until a first fetch
//! succeeds, tokens that need the set are refused and the fetch is retried
//! (1 s, doubling up to the refresh period).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Shortest time between two fetches caused by unknown `kid`s.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(10);
/// One fetch, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set document accepted.
const MAX_BODY: usize = 1 << 20;
/// First retry delay while no set was ever fetched.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// A key tokens may be verified with.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    /// Its key id (`kid`), when it has one.
    pub(crate) kid: Option<String>,
    /// The one algorithm it verifies.
    pub(crate) alg: Algorithm,
    /// The key material.
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey").field("kid", &self.kid).field("alg", &self.alg).finish()
    }
}

/// One JWK as far as we read it.
#[derive(Debug, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

fn b64url(field: &str, v: &Option<String>) -> Result<Vec<u8>, String> {
    let s = v.as_deref().ok_or_else(|| format!("no `{field}`"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("`{field}` is not base64url: {e}"))
}

/// One JWK as a verification key, or why it is not used.
fn parse_jwk(value: serde_json::Value) -> Result<VerifyKey, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
    if let Some(u) = jwk.use_.as_deref().filter(|u| *u != "sig") {
        return Err(format!("`use` is {u:?}, not \"sig\""));
    }
    if let Some(ops) = &jwk.key_ops
        && !ops.iter().any(|o| o == "verify")
    {
        return Err("`key_ops` lacks \"verify\"".into());
    }
    let (alg, key) = match jwk.kty.as_str() {
        "RSA" => {
            if let Some(a) = jwk.alg.as_deref().filter(|a| *a != "RS256") {
                return Err(format!("RSA key for {a}; only RS256 is supported"));
            }
            let n = b64url("n", &jwk.n)?;
            let e = b64url("e", &jwk.e)?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if !(2048..=8192).contains(&bits) {
                return Err(format!("RSA modulus of about {bits} bits (2048 to 8192 are accepted)"));
            }
            if e.iter().all(|b| *b == 0) || e.len() > 8 {
                return Err("unusable RSA exponent".into());
            }
            (Algorithm::RS256, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let crv = jwk.crv.as_deref().unwrap_or("");
            if crv != "P-256" {
                return Err(format!("EC curve {crv:?}; only P-256 is supported"));
            }
            if let Some(a) = jwk.alg.as_deref().filter(|a| *a != "ES256") {
                return Err(format!("P-256 key for {a}; only ES256 is supported"));
            }
            let (x, y) = (b64url("x", &jwk.x)?, b64url("y", &jwk.y)?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes each".into());
            }
            // The uncompressed SEC1 point, as ring verifies with.
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (Algorithm::ES256, DecodingKey::from_ec_der(&point))
        }
        other => return Err(format!("key type {other:?} is not supported (RSA and EC P-256 are)")),
    };
    Ok(VerifyKey { kid: jwk.kid, alg, key })
}

/// The usable keys of a JWKS document. Keys of other types, curves,
/// algorithms or uses are skipped with a log line; a document that is not a
/// key set, or has no usable key, is an error.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let total = set.keys.len();
    let mut keys = Vec::new();
    for (i, v) in set.keys.into_iter().enumerate() {
        let kid = v.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
        match parse_jwk(v) {
            Ok(k) => keys.push(k),
            Err(why) => info!(index = i, kid = kid.as_deref().unwrap_or(""), reason = %why, "JWKS key ignored"),
        }
    }
    if keys.is_empty() {
        return Err(format!("no usable key among {total}"));
    }
    Ok(keys)
}

/// Where the key set comes from.
#[derive(Debug)]
struct Endpoint {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The provider's key set and how it is kept fresh.
#[derive(Debug)]
pub struct Jwks {
    endpoint: Endpoint,
    period: Duration,
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    /// Serializes fetches; holds the number of fetches done.
    fetches: tokio::sync::Mutex<u64>,
    /// When an unknown `kid` last caused a fetch.
    last_kid_fetch: Mutex<Option<Instant>>,
}

impl Jwks {
    /// A key set at `url` (http or https), refreshed every `period`; HTTPS
    /// trusts the system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` are
    /// honoured).
    pub fn new(url: &str, period: Duration) -> Result<Jwks, String> {
        Self::with_roots(url, period, None)
    }

    /// As [`Jwks::new`], trusting only `roots` when given.
    pub fn with_roots(url: &str, period: Duration, roots: Option<rustls::RootCertStore>) -> Result<Jwks, String> {
        let uri: Uri = url.parse().map_err(|e| format!("--jwt-jwks-url {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("--jwt-jwks-url {url:?} must be an http(s) URL")),
        };
        let host = uri.host().ok_or_else(|| format!("--jwt-jwks-url {url:?} has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https { Some(Arc::new(tls_config(roots)?)) } else { None };
        metrics::describe_counter!(
            "lockstep_jwks_refresh_failures_total",
            "JWKS fetches that failed (the last good keys were kept)"
        );
        metrics::describe_counter!("lockstep_jwks_refreshes_total", "JWKS fetches that succeeded");
        metrics::describe_gauge!("lockstep_jwks_keys", "Usable keys in the current JWKS");
        metrics::gauge!("lockstep_jwks_keys").set(0.0);
        Ok(Jwks {
            endpoint: Endpoint { uri, host, port, tls },
            period: period.max(Duration::from_millis(100)),
            keys: RwLock::new(Arc::new(Vec::new())),
            fetches: tokio::sync::Mutex::new(0),
            last_kid_fetch: Mutex::new(None),
        })
    }

    /// The current keys.
    pub(crate) fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many keys are usable now.
    pub fn key_count(&self) -> usize {
        self.keys().len()
    }

    /// Fetches the set now (waiting for a fetch in flight first); whether
    /// this fetch succeeded.
    pub async fn refresh(&self) -> bool {
        let mut n = self.fetches.lock().await;
        *n += 1;
        self.fetch_and_swap().await
    }

    /// A token named `kid`, which the set lacks: fetches again unless a fetch
    /// finished while we waited or an unknown `kid` caused one less than
    /// [`UNKNOWN_KID_INTERVAL`] ago. Returns whether the keys may have changed.
    pub(crate) async fn refresh_for_unknown_kid(&self, kid: &str) -> bool {
        let seen = {
            // A fetch in flight holds the lock: its result is what we want.
            match self.fetches.try_lock() {
                Ok(n) => *n,
                Err(_) => {
                    let _ = self.fetches.lock().await;
                    return true;
                }
            }
        };
        let mut n = self.fetches.lock().await;
        if *n != seen {
            return true;
        }
        {
            let mut last = self.last_kid_fetch.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        info!(kid, "token with an unknown kid: fetching the JWKS again");
        *n += 1;
        self.fetch_and_swap().await
    }

    async fn fetch_and_swap(&self) -> bool {
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
        };
        match result.and_then(|body| parse_jwks(&body)) {
            Ok(keys) => {
                let count = keys.len();
                let kids: Vec<&str> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                info!(url = %self.endpoint.uri, keys = count, kids = ?kids, "JWKS fetched");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                metrics::counter!("lockstep_jwks_refreshes_total").increment(1);
                metrics::gauge!("lockstep_jwks_keys").set(count as f64);
                true
            }
            Err(why) => {
                let kept = self.key_count();
                if kept == 0 {
                    error!(url = %self.endpoint.uri, error = %why, "JWKS fetch failed and no keys are loaded: tokens signed by the identity provider are refused");
                } else {
                    warn!(url = %self.endpoint.uri, error = %why, kept, "JWKS fetch failed: keeping the last good keys");
                }
                metrics::counter!("lockstep_jwks_refresh_failures_total").increment(1);
                metrics::gauge!("lockstep_jwks_keys").set(kept as f64);
                false
            }
        }
    }

    /// Keeps the set fresh until `shutdown`: every refresh period, and while
    /// no set was ever fetched, with a backoff from 1 s up to that period.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut retry = FIRST_RETRY;
        loop {
            let wait = if self.key_count() > 0 {
                retry = FIRST_RETRY;
                self.period
            } else {
                let w = retry.min(self.period);
                retry = (retry * 2).min(self.period);
                w
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
            self.refresh().await;
        }
    }

    async fn fetch(&self) -> Result<Vec<u8>, String> {
        let ep = &self.endpoint;
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port)).await.map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &ep.tls {
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
                    .map_err(|e| format!("server name: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                get(tls, &ep.uri, &ep.host, ep.port).await
            }
            None => get(tcp, &ep.uri, &ep.host, ep.port).await,
        }
    }
}

fn tls_config(roots: Option<rustls::RootCertStore>) -> Result<rustls::ClientConfig, String> {
    let roots = match roots {
        Some(r) => r,
        None => {
            let mut store = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                warn!(error = %e, "reading the system's root certificates");
            }
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                warn!("no system root certificate found: an https JWKS URL cannot be verified");
            }
            store
        }
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// One `GET` over `io`: the body of a 200 answer.
async fn get<S>(io: S, uri: &Uri, host: &str, port: u16) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json, application/jwk-set+json")
        .header(hyper::header::USER_AGENT, concat!("lockstep/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
        if resp.status() != hyper::StatusCode::OK {
            return Err(format!("HTTP status {}", resp.status()));
        }
        let body =
            Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|e| format!("reading the body: {e}"))?;
        Ok(body.to_bytes().to_vec())
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn rsa_jwk(kid: &str, bits: usize) -> serde_json::Value {
        let mut n = vec![0xc5u8; bits / 8];
        n[bits / 8 - 1] |= 1;
        serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(&n), "e": "AQAB"})
    }

    fn ec_jwk(kid: &str, crv: &str, len: usize) -> serde_json::Value {
        serde_json::json!({"kty": "EC", "kid": kid, "crv": crv, "x": b64(&vec![1; len]), "y": b64(&vec![2; len])})
    }

    #[test]
    fn usable_keys_are_kept_and_others_skipped() {
        let doc = serde_json::json!({"keys": [
            rsa_jwk("r1", 2048),
            ec_jwk("e1", "P-256", 32),
            rsa_jwk("small", 1024),
            ec_jwk("p384", "P-384", 48),
            ec_jwk("short", "P-256", 31),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AAAA"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64(&[0xc5; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": b64(&[0xc5; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "noverify", "key_ops": ["encrypt"], "n": b64(&[0xc5; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "bad64", "n": "!!!", "e": "AQAB"},
            {"kty": "RSA", "kid": "nomod", "e": "AQAB"},
            "not an object",
            {"kty": "EC", "crv": "P-256", "x": b64(&[3; 32]), "y": b64(&[4; 32]), "key_ops": ["verify"]},
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let got: Vec<_> = keys.iter().map(|k| (k.kid.clone(), k.alg)).collect();
        assert_eq!(
            got,
            vec![
                (Some("r1".into()), Algorithm::RS256),
                (Some("e1".into()), Algorithm::ES256),
                (None, Algorithm::ES256)
            ]
        );
        let jsonwebtoken::DecodingKeyKind::SecretOrDer(point) = keys[1].key.kind() else { panic!("EC key as a point") };
        assert_eq!((point.len(), point[0]), (65, 4));
    }

    #[test]
    fn garbage_and_empty_sets_are_errors() {
        for body in [&b"<html>502</html>"[..], b"", b"{}", b"{\"keys\": 3}", b"[]", b"{\"keys\": []}"] {
            assert!(parse_jwks(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
        let only_bad = serde_json::json!({"keys": [{"kty": "oct", "k": "AAAA"}]});
        assert!(parse_jwks(only_bad.to_string().as_bytes()).unwrap_err().contains("no usable key among 1"));
    }

    /// An HTTPS server on 127.0.0.1 with a new self-signed certificate for
    /// `localhost`, answering every request with `body`; and that certificate.
    async fn https_server(body: String) -> (u16, rustls::pki_types::CertificateDer<'static>) {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let id = wtransport::Identity::self_signed(["localhost"]).unwrap();
        let cert = CertificateDer::from(id.certificate_chain().as_slice()[0].der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.private_key().secret_der().to_vec()));
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, body) = (acceptor.clone(), body.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, cert)
    }

    #[tokio::test]
    async fn https_fetches_trust_only_the_given_roots() {
        let doc = serde_json::json!({"keys": [ec_jwk("e1", "P-256", 32)]}).to_string();
        let (port, cert) = https_server(doc).await;
        let url = format!("https://localhost:{port}/.well-known/jwks.json");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let trusted = Jwks::with_roots(&url, Duration::from_secs(60), Some(roots)).unwrap();
        assert!(trusted.refresh().await, "fetched over TLS from a trusted certificate");
        assert_eq!(trusted.key_count(), 1);

        let other = wtransport::Identity::self_signed(["localhost"]).unwrap();
        let mut wrong = rustls::RootCertStore::empty();
        wrong
            .add(rustls::pki_types::CertificateDer::from(other.certificate_chain().as_slice()[0].der().to_vec()))
            .unwrap();
        let untrusted = Jwks::with_roots(&url, Duration::from_secs(60), Some(wrong)).unwrap();
        assert!(!untrusted.refresh().await, "a certificate nobody vouches for is refused");
        assert_eq!(untrusted.key_count(), 0);
    }

    #[test]
    fn urls_are_checked() {
        assert!(Jwks::new("ftp://idp/keys", Duration::from_secs(60)).is_err());
        assert!(Jwks::new("/keys", Duration::from_secs(60)).is_err());
        let j = Jwks::new("http://[::1]:8081/.well-known/jwks.json", Duration::from_secs(60)).unwrap();
        assert_eq!((j.endpoint.host.as_str(), j.endpoint.port), ("::1", 8081));
        let j = Jwks::new("https://idp.example/jwks", Duration::from_secs(60)).unwrap();
        assert_eq!(j.endpoint.port, 443);
        assert!(j.endpoint.tls.is_some());
    }
}
