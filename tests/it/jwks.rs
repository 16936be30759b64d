//! Keys from the identity provider (`--jwt-jwks-url`): a real JWKS server on
//! 127.0.0.1 whose keys rotate, fails and comes back; RS256 and ES256 tokens
//! signed here with ring, checked over REST and WebSocket.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use lockstep::auth::{Claims, Plan, unix_now};
use lockstep::config::Config;
use lockstep_protocol::ServerMsg;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::accounts::{hello_with, http};
use crate::common::*;

/// Two fixed RSA keys (ring signs with RSA but cannot make RSA keys).
const RSA_A: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDFXzZxyFDjGDE6\nNsYiJ758raB+qfwvHBTWmlBhYcg44S1so/+RclyWoK1wr8gi8/TXTZWT9TNKnrGt\nk93D2Pykv6C8hHpS40w5CxLuDEYtZlIlO1FlVCWPaDSW//+3QDRMgRrsqkKxkbE/\nD2HIVMYdx3eXxqka5Tfn7H4FhudJA6aSBfu/qvjOqObrhZVBMmgmE4e4JK1rNmGN\n8Ip8pRjsS9FD7FDeuMtJwdUwYe8BHZCPVZiSYKQdO9EUOgZ0IrbQYudpU9I7ZD2i\n/HrOOhc2NFC0zQGvl+t5i4vP4drHs2ofjkvWxG3vd7mPMQ1dwDr8BZhLlFvDroSb\ne8245M57AgMBAAECggEAIAmaftGzP4mXxAlMFBM7emV8ndLd2o/GWidmUMhchc8X\nXoEoZOWZXeHrBVWjOPk8jw5K719n2f70fGZ6IuY/7EYmwzMF4BqBLuk7Q2S+p3Pq\ndZyxU69bAXI6xx/61DYZxylVw4DHnqc1jDTk/G22UvMj2IEoxfLbJkxfEGqbdGBY\nWSywsxgQVoqE52+UqeMMAah6z+AJ/eM03xhKJMqBFDjOOMc9rCud+rLPnD8j1RWB\nNi0ZTzhlWFrvkREuxUHAZLULQLZt/yBL2bjLwXqdub6H2BLtiHWxDVIKd/KTS+Oq\nvYN6wxFLByEBTxxFpLzgAU34TWCfM7rhfx9km5MawQKBgQDixBTipSgsvTpSNnRh\n3HYPXtQ/8FBtFscpFk997Qmtlwoo4k05t4jeP1bVHQFM72P7QVUTUM6cLCNmYOhK\nO5mCovgCSjD7+rFuDTYItv8KsF0w6OfDVN3z73S4qHmYiDepxFJ0khYoDI5EbsT1\nb6YsbhQcvCUbGoAI6sarEyy7kQKBgQDe0QuSfa/ocyl7Ad617t+5dAUUqJ7tW0nB\n9zEqqfdlx9rwZJH9CHMcZHLvKCa7SJu8ZLYsTi/6WeoR8ys8VKGEfodvycMjgtI3\nQVc7N3fnT2Zd9wyGzcY0HCKrco9n+F+ITi93C2fPMHKRR4+9Oudb2ItclKiPiVFl\nQwwo4YCrSwKBgFf9qfUADQS/MGAyTRqkBxOTwlxFDZAm5ITm6VV9ouG+1+xhU4Hv\n26YRgcoUBSsrQOp/wVlLY8BpyBqzw676TWjJf96zlypPboW7jpn3GCO3p5GQ7k13\nIuDCq9HzXat4P9EaIryk6wADTzjymm56MkrPM/KqduN7du7+2rQLLrJhAoGAXxnS\nWqASqKAeoEXYDMb77me6k2q1CpHgFU2wSolo8qQuqlQCi4FDwGaPN8xnW6BN+Eb0\nCk0E5VHjOe4UEhf9KFPo8qmnBE0d9D+LP9cY8j1Nb+W2DwNdCXjIw2yOEM5N2Bum\n3qSbli8TdzaX/yhY/zaZpNY+a6UsfI/1bK1zAakCgYA0JpC3Be/B/Y4Y2qhxiJED\nP3KlSFvGUhJ6ERu82ZNyhd9taYOb7O20VrsHsXoKYFp77L9ADnJYp03CGv3feERx\nTsYrfrzuQzTZ3bDoTJKYVR+4y7Za1H6ZtaqM+0XOLPrNkWjvzhPcbOd0I4rdkH0o\nS6y2D0dw8cQEacUC28pklw==\n-----END PRIVATE KEY-----";
const RSA_C: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCxlDCwB2jlJMHh\nSm/urGthi3VLAOf6GqyStxd04pu4f6VI3UQA+OzShZb93WNHP+PjyQS6QE7HOYpu\nyj2MSHNS4o33GJOVvryTnRS6umLaj5Qu9NNn2PnsB2Zk0kn7axn5kKA5c/CWgWRJ\n7j/JxvQhYCWQLPEO/Ss1O47VI/H99HDf8fH+QXOVPIgX64stp/uGvEZuTnBZQhky\nyXG/KLTKEUbH56+mM5BoypPsAu9S9Oim+iK0eDV9Ptdi+6jipZ+4n7+mPfYKOZBz\n/I0IVMzDQFa5nPlHQiML5J1QW2WnsUjgSKV5aW/8SGRf0EunK//X8ht3oxoMqtqW\nHBgM8Uu3AgMBAAECggEAFpciByViKuhdVmeNoWtuG6d4lpU5GEA6x6KiyXFR2wuN\n/3IlMQnPDXcGKX8iSTxE+u4l0Psrqmd/sgQTXAcUI1gD3wp8LUFppE5dhpBTJre7\njlUB7ITrQk4CBihvAJzJiKM6kXnWLOdYAURdpAclznXN7C9Iw/M2rcZzr1oBHSER\nyTck3m5MVi02zENvPWGw/MI9Y0vDzQGlGDiAPZiBv+f6ihFiZowOPIyH+Q+ZkPUu\ntnN8U+t+OtRaui0MbF/gtnWpa+im4YrKmck4r93VZQk+mmLk9arRqnSnHwcOFQ7A\nKQkJ4mumxRnOK06aO1XCjpuNvSH83tlXWLA1d0Sw/QKBgQDfUJrx9Az3h6962dFm\nd3lbEo1OqqOaHJLVNLQxSyiNGN0h/ft10L4cRAZfEgqUMAnQxLJZvkuO5UiDb9KP\neMCSFfOcrdwQEuWAaG+g6en87YpGZhOtDICOPwKcjwdUSEw9nFJIcX0UasmZw0Gl\nBGRHcbwStc8ab+lmaQp9tnDyDQKBgQDLkeab4+4dJZ9yAS39UlgWvqDFAFUT1w4S\nbqcm5IPCk0dnMFRGE8xWZYrgvschbZUPeLUgC9+lZCtHSbEECiOzZ/YlgvStyKUg\nfaiyVoA57sc7/G3PfXiza8akQ3hG5lY4w0c1ldwuGb10L7jezH/clHif5q2uvPG8\n6Dl4P/030wKBgQC0ryFPFynOtcgz3D1jbNOR7obK2aIZtXjQbR5GrAsZbr6tHDTz\ndHv9nsSQ86X/lIa8lgnANwonijiLsFRrpUYabQx4/usJTmDG7rkzN1ANR50TrM/K\nukzhyvWv+sHxXbXiO7MPzlNny6dmc+ePPuhsLggAE36IY3gzVlYYtR7ZmQKBgB1k\nBT2AnQJMSkb1cKRgXSN7hk6rC51/sSJsI2n0GCnhha+aRLCRbzESHAjywmFLJvhC\n3zOvQyzn12/Fbe89X4YpflpQG+9zRpP4UIDfCEhU9yLsARax8NlGuDlDHHxwCQbM\n+tz7s/xb7wR1V2WjdNpt/TRo466UzPoPNSztYCvNAoGBALDIVBlUUd/ACtwhAiUq\nqTC1ZolQbCqpj2Ez7sR+pWR2oqUA9MUlTGZPfvQTEMBJhMowZLcnmyny7PwGQ1Xz\n1S16jU4cJ0fkcMmsCdFWyfreKhQ5voY77hxhxXCAxZSSEFLlnK8T6BglXkHPpwpV\nqqbFpSjexXFLBzLyjNpofMVO\n-----END PRIVATE KEY-----";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

/// A signing key with its kid, and its public JWK.
enum Key {
    Rsa(sig::RsaKeyPair, String),
    Ec(sig::EcdsaKeyPair, String),
}

impl Key {
    fn rsa(pem: &str, kid: &str) -> Key {
        Key::Rsa(sig::RsaKeyPair::from_pkcs8(&pem_der(pem)).unwrap(), kid.into())
    }

    fn ec(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Key::Ec(
            sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap(),
            kid.into(),
        )
    }

    fn jwk(&self) -> Value {
        match self {
            Key::Rsa(k, kid) => {
                let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Key::Ec(k, kid) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "use": "sig", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
        }
    }

    /// A token for `sub` valid `ttl` seconds (negative: expired), signed by
    /// this key, its header naming `kid` (none with `None`).
    fn token_as(&self, kid: Option<&str>, sub: &str, exp: u64) -> String {
        let alg = match self {
            Key::Rsa(..) => "RS256",
            Key::Ec(..) => "ES256",
        };
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let claims = Claims {
            sub: sub.into(),
            plan: Plan::Premium,
            exp,
            iat: None,
            max_devices: None,
            host_of: vec![],
            aud: None,
            iss: None,
        };
        let msg = format!("{}.{}", b64(header.to_string().as_bytes()), b64(&serde_json::to_vec(&claims).unwrap()));
        let rng = SystemRandom::new();
        let signature = match self {
            Key::Rsa(k, _) => {
                let mut s = vec![0; k.public().modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, msg.as_bytes(), &mut s).unwrap();
                s
            }
            Key::Ec(k, _) => k.sign(&rng, msg.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{msg}.{}", b64(&signature))
    }

    fn token(&self, sub: &str) -> String {
        let kid = match self {
            Key::Rsa(_, k) | Key::Ec(_, k) => k.clone(),
        };
        self.token_as(Some(&kid), sub, unix_now() + 600)
    }
}

/// What the JWKS server answers.
#[derive(Clone)]
enum Serve {
    Keys(Value),
    Status(u16),
    Body(&'static str),
    /// Accept the connection and drop it without a word.
    Hangup,
}

/// A JWKS server on 127.0.0.1 that counts the requests it gets.
struct Idp {
    addr: std::net::SocketAddr,
    serve: Arc<Mutex<Serve>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Idp {
    async fn start(serve: Serve) -> Idp {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), serve)
    }

    fn on(listener: TcpListener, serve: Serve) -> Idp {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = listener.local_addr().unwrap();
        let serve = Arc::new(Mutex::new(serve));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (serve.clone(), hits.clone());
        // A plain HTTP/1.1 responder: one request per connection.
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let answer = s.lock().unwrap().clone();
                let hits = h.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    assert!(
                        buf.starts_with(b"GET /.well-known/jwks.json HTTP/1.1\r\n"),
                        "{}",
                        String::from_utf8_lossy(&buf)
                    );
                    hits.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = match answer {
                        Serve::Keys(v) => (200, v.to_string()),
                        Serve::Status(s) => (s, "{\"error\":\"down\"}".to_owned()),
                        Serve::Body(b) => (200, b.to_owned()),
                        Serve::Hangup => return,
                    };
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        Idp { addr, serve, hits, task }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn set(&self, serve: Serve) {
        *self.serve.lock().unwrap() = serve;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Waits until the server got `n` more requests than `from`.
    async fn until_hits(&self, from: usize, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.hits() < from + n {
            assert!(tokio::time::Instant::now() < deadline, "the JWKS was not fetched again in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn keys(keys: &[&Key]) -> Serve {
    Serve::Keys(json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}))
}

/// A server that knows only the JWKS at `url` (no secret, no dev mode).
async fn server(url: String, refresh_ms: u64) -> TestServer {
    TestServer::with(|c: &mut Config| {
        c.dev = false;
        c.jwt_secret = None;
        c.jwt_jwks_url = Some(url);
        c.jwt_jwks_refresh_ms = refresh_ms;
    })
    .await
}

/// The status of an authenticated REST call with `token`.
async fn rest(s: &TestServer, token: &str) -> (u16, Value) {
    let (status, _, body) = http(s, "GET", "/api/account/devices", Some(token), None).await;
    (status, body)
}

/// Joins over WebSocket with `token`: `Ok` on Welcome, else the error code.
async fn hello(s: &TestServer, token: &str) -> Result<(), u16> {
    let mut ws = ws_binary(&s.ws_url("jwks-ev")).await;
    send(&mut ws, &hello_with("jwks-ev", "dev-1", Some(token))).await;
    until(&mut ws, |g| match g {
        Got::Msg(ServerMsg::Welcome(_)) => Some(Ok(())),
        Got::Msg(ServerMsg::Error(e)) => Some(Err(e.code)),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn keys_rotate_by_kid_and_unknown_kids_are_refused() {
    let a = Key::rsa(RSA_A, "rsa-a");
    let b = Key::ec("ec-b");
    let idp = Idp::start(keys(&[&a])).await;
    let s = server(idp.url(), 3_600_000).await;
    assert_eq!(idp.hits(), 1, "the key set is fetched once at start");

    // RS256 with kid A, over REST and WebSocket.
    assert_eq!(rest(&s, &a.token("alice")).await.0, 200);
    assert_eq!(hello(&s, &a.token("alice")).await, Ok(()));
    assert_eq!(idp.hits(), 1);

    // The provider rotates to B (ES256): the first token naming B fetches the
    // set again at once and is accepted.
    idp.set(keys(&[&b]));
    assert_eq!(rest(&s, &b.token("bob")).await.0, 200);
    assert_eq!(idp.hits(), 2, "one fetch for the unknown kid");
    assert_eq!(hello(&s, &b.token("bob")).await, Ok(()));

    // A is no longer listed: refused. Its kid is unknown now, but an unknown
    // kid fetched less than 10 s ago: no new fetch.
    let (status, body) = rest(&s, &a.token("alice")).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{body}");
    assert_eq!(hello(&s, &a.token("alice")).await, Err(4012));

    // Made-up kids, and B's kid on a token another key signed: refused, and
    // the provider is not asked again.
    let c = Key::ec("ec-c");
    for t in [
        c.token("mallory"),
        c.token_as(Some("ec-b"), "mallory", unix_now() + 600),
        c.token_as(None, "m", unix_now() + 600),
    ] {
        assert_eq!(rest(&s, &t).await.0, 401);
    }
    for i in 0..20 {
        assert_eq!(rest(&s, &c.token_as(Some(&format!("garbage-{i}")), "m", unix_now() + 600)).await.0, 401);
    }
    let forged_rsa = Key::rsa(RSA_C, "rsa-a");
    assert_eq!(rest(&s, &forged_rsa.token("mallory")).await.0, 401);
    assert_eq!(idp.hits(), 2, "unknown kids do not make us hammer the provider");

    // A token without kid is tried against every key of its algorithm.
    assert_eq!(rest(&s, &b.token_as(None, "bob", unix_now() + 600)).await.0, 200);
    // An expired B token: 4013, not a bad signature.
    let expired = b.token_as(Some("ec-b"), "bob", unix_now() - 600);
    assert_eq!(rest(&s, &expired).await.1["error"], "token_expired");
    assert_eq!(hello(&s, &expired).await, Err(4013));
    // HS256 tokens are refused: no secret is configured.
    assert_eq!(rest(&s, &crate::accounts::token("alice", Plan::Premium)).await.0, 401);
    s.stop().await;
}

#[tokio::test]
async fn a_failing_jwks_keeps_the_last_good_keys() {
    let a = Key::rsa(RSA_A, "rsa-a");
    let idp = Idp::start(keys(&[&a])).await;
    let s = server(idp.url(), 100).await;
    assert_eq!(rest(&s, &a.token("alice")).await.0, 200);

    // Down (500), garbage, an empty set, a dropped connection: each fetched
    // twice by the periodic refresh, and A still works after each.
    for bad in [Serve::Status(500), Serve::Body("<html>oops</html>"), Serve::Body("{\"keys\": []}"), Serve::Hangup] {
        let from = idp.hits();
        idp.set(bad);
        idp.until_hits(from, 2).await;
        assert_eq!(rest(&s, &a.token("alice")).await.0, 200);
        assert_eq!(hello(&s, &a.token("alice")).await, Ok(()));
    }

    // Back with a rotated set: the periodic refresh (no token asked for it)
    // drops A and takes B.
    let b = Key::ec("ec-b");
    let from = idp.hits();
    idp.set(keys(&[&b]));
    idp.until_hits(from, 2).await;
    assert_eq!(rest(&s, &a.token("alice")).await.0, 401);
    assert_eq!(rest(&s, &b.token("bob")).await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_jwks_unreachable_at_start_is_retried_until_keys_arrive() {
    let a = Key::rsa(RSA_A, "rsa-a");
    // A port nobody listens on yet.
    let spare = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = spare.local_addr().unwrap();
    drop(spare);
    let s = server(format!("http://{addr}/.well-known/jwks.json"), 500).await;

    // The server runs; tokens wait for the keys: 503 over REST, a non-final
    // error (internal, 4019: the client reconnects later) over WebSocket.
    let (status, body) = rest(&s, &a.token("alice")).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("keys_unavailable")), "{body}");
    assert_eq!(hello(&s, &a.token("alice")).await, Err(4019));

    // The provider comes up: the retries find the keys.
    let idp = Idp::on(TcpListener::bind(addr).await.unwrap(), keys(&[&a]));
    idp.until_hits(0, 1).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = rest(&s, &a.token("alice")).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "keys never arrived ({status})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hello(&s, &a.token("alice")).await, Ok(()));
    s.stop().await;
}
