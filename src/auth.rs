//! Access tokens: JWTs issued by the OTT platform.
//!
//! Keys, which may be combined:
//! - HS256 with a shared secret (`LOCKSTEP_JWT_SECRET` or `--jwt-secret-file`);
//! - RS256/ES256 with public key files (`--jwt-public-key`, repeatable);
//! - RS256/ES256 with the identity provider's key set (`--jwt-jwks-url`,
//!   [`jwks`]), by the token header's `kid`, refreshed while running.
//!
//! Which key checks a token follows from its header alone: an HS256 token the
//! secret; an RS256/ES256 token with a `kid` the JWKS keys of that `kid` and
//! algorithm, then every public key file of its algorithm; without a `kid`,
//! every JWKS key and every file of its algorithm. The first key whose
//! signature matches decides (expiry, audience, issuer). A `kid` the set lacks
//! causes one more fetch of the set (rate-limited) before the token is refused.
//!
//! Claims: `sub` (user id), `plan` (`free` | `premium`), `exp`, optional
//! `max_devices`, optional `host_of` (event ids this user hosts), and
//! `aud`/`iss` when configured. Signatures are checked with `ring`, the crypto
//! the TLS stack already uses, through jsonwebtoken's `CryptoProvider` hook.

pub mod jwks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lockstep_protocol::ErrorCode;
use ring::signature::{self as sig, KeyPair as _};
use ring::{hmac, rand::SystemRandom};
use serde::{Deserialize, Serialize};

pub use jwks::Jwks;
use jwks::VerifyKey;

/// A viewer's subscription plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// The free plan.
    Free,
    /// The premium plan: more devices, invitations.
    Premium,
}

/// The claims Lockstep reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The plan.
    pub plan: Plan,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// A per-user device limit that overrides the plan's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_devices: Option<u32>,
    /// Event ids whose rooms this user hosts (broadcasters, moderators).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_of: Vec<String>,
    /// Audience, when the platform sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer, when the platform sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

impl Claims {
    /// Whether this user hosts `event_id` by its claims.
    pub fn hosts(&self, event_id: &str) -> bool {
        self.host_of.iter().any(|e| e == event_id)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token where one is required.
    #[error("an access token is required")]
    Missing,
    /// The token has expired.
    #[error("the access token has expired")]
    Expired,
    /// Bad signature, malformed token, wrong audience or issuer.
    #[error("invalid access token: {0}")]
    Invalid(String),
    /// The token needs the identity provider's keys, which could not be
    /// fetched yet (worth retrying later).
    #[error("the keys to check this access token are not available yet")]
    KeysUnavailable,
}

impl AuthError {
    /// The protocol code for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
            // Not the client's fault, and not final: it reconnects later.
            AuthError::KeysUnavailable => ErrorCode::Internal,
            _ => ErrorCode::Unauthorized,
        }
    }

    /// The REST error code string.
    pub fn api_code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Expired => "token_expired",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// How tokens are checked (and, with a secret, minted).
#[derive(Clone)]
pub struct Authenticator {
    secret: Option<(DecodingKey, EncodingKey)>,
    /// From `--jwt-public-key` files.
    public_keys: Vec<VerifyKey>,
    jwks: Option<Arc<Jwks>>,
    /// The claim checks, one per accepted algorithm.
    validations: Vec<Validation>,
    /// Whether anonymous demo users are allowed (`--dev`).
    pub dev: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("secret", &self.secret.is_some())
            .field("public_keys", &self.public_keys)
            .field("jwks", &self.jwks)
            .field("dev", &self.dev)
            .finish()
    }
}

/// Where the verification key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A shared HS256 secret.
    Secret(Vec<u8>),
    /// A PEM public key (RSA for RS256, EC P-256 for ES256).
    PublicKeyPem(PathBuf),
}

/// Every key source at once; at least one must be given.
#[derive(Debug, Default)]
pub struct Keys {
    /// A shared HS256 secret.
    pub secret: Option<Vec<u8>>,
    /// PEM public keys (RSA for RS256, EC P-256 for ES256).
    pub public_keys: Vec<PathBuf>,
    /// The identity provider's key set.
    pub jwks: Option<Jwks>,
}

/// Why the auth configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// The key file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The key is not a usable PEM key.
    #[error("unusable key in {0}: {1}")]
    Key(PathBuf, String),
    /// The secret is too short to be safe.
    #[error("the JWT secret must be at least 32 bytes")]
    WeakSecret,
    /// No key source at all.
    #[error("no token key: give a secret, a public key or a JWKS URL")]
    NoKey,
}

/// What became of a token checked against the keys at hand.
enum Miss {
    /// Refused for good.
    Refused(AuthError),
    /// It names a `kid` the key set lacks (and no other key took it).
    UnknownKid(String, AuthError),
}

impl Authenticator {
    /// An authenticator for `key`, checking `aud` and `iss` when given.
    pub fn new(key: KeySource, aud: Option<String>, iss: Option<String>, dev: bool) -> Result<Self, AuthConfigError> {
        let keys = match key {
            KeySource::Secret(s) => Keys { secret: Some(s), ..Keys::default() },
            KeySource::PublicKeyPem(p) => Keys { public_keys: vec![p], ..Keys::default() },
        };
        Self::with_keys(keys, aud, iss, dev)
    }

    /// An authenticator for every key of `keys`, checking `aud` and `iss` when given.
    pub fn with_keys(keys: Keys, aud: Option<String>, iss: Option<String>, dev: bool) -> Result<Self, AuthConfigError> {
        install_provider();
        if keys.secret.is_none() && keys.public_keys.is_empty() && keys.jwks.is_none() {
            return Err(AuthConfigError::NoKey);
        }
        let secret = match keys.secret {
            Some(s) if s.len() < 32 => return Err(AuthConfigError::WeakSecret),
            Some(s) => Some((DecodingKey::from_secret(&s), EncodingKey::from_secret(&s))),
            None => None,
        };
        let public_keys = keys.public_keys.iter().map(read_pem).collect::<Result<Vec<_>, _>>()?;
        let mut base = Validation::new(Algorithm::HS256);
        base.leeway = 5;
        base.validate_aud = aud.is_some();
        // A configured audience or issuer must be present, not merely match
        // when present: jsonwebtoken skips absent claims unless required.
        let mut required = vec!["exp", "sub"];
        if let Some(aud) = aud {
            base.set_audience(&[aud]);
            required.push("aud");
        }
        if let Some(iss) = iss {
            base.set_issuer(&[iss]);
            required.push("iss");
        }
        base.set_required_spec_claims(&required);
        let validations = [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256]
            .into_iter()
            .map(|alg| Validation { algorithms: vec![alg], ..base.clone() })
            .collect();
        Ok(Authenticator { secret, public_keys, jwks: keys.jwks.map(Arc::new), validations, dev })
    }

    /// The identity provider's key set, when configured.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// With a key set: fetches it once (a failure is logged, and retried by
    /// the refresh task), then keeps it fresh in a task until `shutdown`.
    pub async fn start(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        if let Some(jwks) = &self.jwks {
            // The recorder first (idempotent), so the first fetch is counted.
            let _ = crate::metrics::install();
            jwks.refresh().await;
            tokio::spawn(jwks.clone().run(shutdown));
        }
    }

    /// Checks a token against the keys at hand and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_now(token).map_err(|m| match m {
            Miss::Refused(e) | Miss::UnknownKid(_, e) => e,
        })
    }

    /// Checks a token; one whose `kid` the key set lacks makes the set be
    /// fetched again (at most once per [`jwks::UNKNOWN_KID_INTERVAL`] for
    /// unknown `kid`s) and is checked once more.
    pub async fn check(&self, token: &str) -> Result<Claims, AuthError> {
        match self.verify_now(token) {
            Ok(c) => Ok(c),
            Err(Miss::Refused(e)) => Err(e),
            Err(Miss::UnknownKid(kid, e)) => {
                let Some(jwks) = &self.jwks else { return Err(e) };
                if jwks.refresh_for_unknown_kid(&kid).await { self.verify(token) } else { Err(e) }
            }
        }
    }

    fn validation(&self, alg: Algorithm) -> &Validation {
        self.validations.iter().find(|v| v.algorithms[0] == alg).expect("a validation per accepted algorithm")
    }

    fn verify_now(&self, token: &str) -> Result<Claims, Miss> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| Miss::Refused(AuthError::Invalid(e.to_string())))?;
        let alg = header.alg;
        if !matches!(alg, Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256) {
            return Err(Miss::Refused(AuthError::Invalid(format!("algorithm {alg:?} is not accepted"))));
        }
        let set = self.jwks.as_ref().map(|j| j.keys());
        let from_set = set
            .iter()
            .flat_map(|s| s.iter())
            .filter(|k| k.alg == alg && (header.kid.is_none() || k.kid.as_deref() == header.kid.as_deref()));
        let from_files = self.public_keys.iter().filter(|k| k.alg == alg);
        let secret = self.secret.iter().filter(|_| alg == Algorithm::HS256).map(|(d, _)| d);
        let validation = self.validation(alg);
        let mut tried = false;
        for key in from_set.map(|k| &k.key).chain(from_files.map(|k| &k.key)).chain(secret) {
            tried = true;
            match jsonwebtoken::decode::<Claims>(token, key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => match e.kind() {
                    // Not this key: try the next.
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidKeyFormat
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidEcdsaKey => continue,
                    // The signature matched: this key decides.
                    ErrorKind::ExpiredSignature => return Err(Miss::Refused(AuthError::Expired)),
                    ErrorKind::InvalidAudience => {
                        return Err(Miss::Refused(AuthError::Invalid("wrong audience".into())));
                    }
                    ErrorKind::InvalidIssuer => return Err(Miss::Refused(AuthError::Invalid("wrong issuer".into()))),
                    _ => return Err(Miss::Refused(AuthError::Invalid(e.to_string()))),
                },
            }
        }
        let unknown_kid = match (&header.kid, &set) {
            (Some(kid), Some(set)) if alg != Algorithm::HS256 => !set.iter().any(|k| k.kid.as_deref() == Some(kid)),
            _ => false,
        };
        let refused = if tried {
            AuthError::Invalid("bad signature".into())
        } else if alg != Algorithm::HS256 && set.as_ref().is_some_and(|s| s.is_empty()) {
            AuthError::KeysUnavailable
        } else if unknown_kid {
            AuthError::Invalid("no key with this kid".into())
        } else {
            AuthError::Invalid(format!("no key for {alg:?} tokens"))
        };
        match header.kid {
            Some(kid) if unknown_kid => Err(Miss::UnknownKid(kid, refused)),
            _ => Err(Miss::Refused(refused)),
        }
    }

    /// Mints a token (needs the HS256 secret).
    pub fn mint(&self, claims: &Claims) -> Option<String> {
        let (_, key) = self.secret.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key).ok()
    }

    /// Claims for a token of `sub` on `plan` valid for `ttl_secs`, with the
    /// configured audience and issuer.
    pub fn claims_for(&self, sub: &str, plan: Plan, ttl_secs: u64) -> Claims {
        let now = unix_now();
        let v = &self.validations[0];
        Claims {
            sub: sub.into(),
            plan,
            exp: now + ttl_secs,
            iat: Some(now),
            max_devices: None,
            host_of: Vec::new(),
            aud: v.aud.as_ref().and_then(|a| a.iter().next().cloned()),
            iss: v.iss.as_ref().and_then(|a| a.iter().next().cloned()),
        }
    }
}

/// A PEM public key file: RSA (RS256) or EC P-256 (ES256).
fn read_pem(path: &PathBuf) -> Result<VerifyKey, AuthConfigError> {
    let pem = std::fs::read(path).map_err(|e| AuthConfigError::Read(path.clone(), e))?;
    let text = String::from_utf8_lossy(&pem);
    let (key, alg) = if text.contains("BEGIN RSA PUBLIC KEY") || is_rsa_spki(&pem) {
        (DecodingKey::from_rsa_pem(&pem), Algorithm::RS256)
    } else {
        (DecodingKey::from_ec_pem(&pem), Algorithm::ES256)
    };
    let key = key.map_err(|e| AuthConfigError::Key(path.clone(), e.to_string()))?;
    Ok(VerifyKey { kid: None, alg, key })
}

/// Shared handle.
pub type SharedAuth = Arc<Authenticator>;

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn is_rsa_spki(pem: &[u8]) -> bool {
    // An SPKI "PUBLIC KEY" holding RSA carries the rsaEncryption OID
    // (1.2.840.113549.1.1.1); EC keys carry id-ecPublicKey instead.
    let text = String::from_utf8_lossy(pem);
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    b64.contains("MIIBIjANBgkqhkiG9w0BAQEF") || b64.contains("KoZIhvcNAQEB")
}

// ---------------------------------------------------------------- ring provider

/// Installs the ring-backed provider once per process.
pub fn install_provider() {
    static PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory: ring_signer,
        verifier_factory: ring_verifier,
        key_utils: KeyUtils::new_unimplemented(),
    };
    let _ = PROVIDER.install_default();
}

fn unsupported() -> jsonwebtoken::errors::Error {
    ErrorKind::InvalidAlgorithm.into()
}

struct HmacKey(hmac::Key, Algorithm);

impl signature::Signer<Vec<u8>> for HmacKey {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(hmac::sign(&self.0, msg).as_ref().to_vec())
    }
}

impl signature::Verifier<Vec<u8>> for HmacKey {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        hmac::verify(&self.0, msg, signature).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for HmacKey {
    fn algorithm(&self) -> Algorithm {
        self.1
    }
}

impl JwtVerifier for HmacKey {
    fn algorithm(&self) -> Algorithm {
        self.1
    }
}

struct EcdsaSigner(sig::EcdsaKeyPair, Algorithm);

impl signature::Signer<Vec<u8>> for EcdsaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        self.0.sign(&SystemRandom::new(), msg).map(|s| s.as_ref().to_vec()).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for EcdsaSigner {
    fn algorithm(&self) -> Algorithm {
        self.1
    }
}

struct PublicKeyVerifier {
    alg: &'static dyn sig::VerificationAlgorithm,
    key: jsonwebtoken::DecodingKey,
    jwt_alg: Algorithm,
}

impl signature::Verifier<Vec<u8>> for PublicKeyVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match self.key.kind() {
            jsonwebtoken::DecodingKeyKind::SecretOrDer(der) => {
                sig::UnparsedPublicKey::new(self.alg, der).verify(msg, signature).is_ok()
            }
            jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, e } => {
                let params = match self.jwt_alg {
                    Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                    _ => &sig::RSA_PKCS1_2048_8192_SHA256,
                };
                sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature).is_ok()
            }
        };
        if ok { Ok(()) } else { Err(signature::Error::new()) }
    }
}

impl JwtVerifier for PublicKeyVerifier {
    fn algorithm(&self) -> Algorithm {
        self.jwt_alg
    }
}

fn hmac_alg(alg: Algorithm) -> Option<hmac::Algorithm> {
    match alg {
        Algorithm::HS256 => Some(hmac::HMAC_SHA256),
        Algorithm::HS384 => Some(hmac::HMAC_SHA384),
        Algorithm::HS512 => Some(hmac::HMAC_SHA512),
        _ => None,
    }
}

fn ring_signer(alg: &Algorithm, key: &EncodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if let Some(h) = hmac_alg(*alg) {
        return Ok(Box::new(HmacKey(hmac::Key::new(h, key.as_bytes()), *alg)));
    }
    let signing = match alg {
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        _ => return Err(unsupported()),
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, key.as_bytes(), &SystemRandom::new())
        .map_err(|_| jsonwebtoken::errors::Error::from(ErrorKind::InvalidEcdsaKey))?;
    let _ = pair.public_key();
    Ok(Box::new(EcdsaSigner(pair, *alg)))
}

fn ring_verifier(alg: &Algorithm, key: &DecodingKey) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if let Some(h) = hmac_alg(*alg) {
        let jsonwebtoken::DecodingKeyKind::SecretOrDer(secret) = key.kind() else {
            return Err(ErrorKind::InvalidKeyFormat.into());
        };
        return Ok(Box::new(HmacKey(hmac::Key::new(h, secret), *alg)));
    }
    let verification: &'static dyn sig::VerificationAlgorithm = match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        _ => return Err(unsupported()),
    };
    Ok(Box::new(PublicKeyVerifier { alg: verification, key: key.clone(), jwt_alg: *alg }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn auth(aud: Option<&str>) -> Authenticator {
        Authenticator::new(KeySource::Secret(SECRET.to_vec()), aud.map(Into::into), None, false).unwrap()
    }

    #[test]
    fn minted_tokens_verify_and_carry_claims() {
        let a = auth(None);
        let mut c = a.claims_for("alice", Plan::Premium, 3600);
        c.host_of = vec!["ev1".into()];
        c.max_devices = Some(2);
        let t = a.mint(&c).unwrap();
        let got = a.verify(&t).unwrap();
        assert_eq!(got, c);
        assert!(got.hosts("ev1") && !got.hosts("ev2"));
    }

    #[test]
    fn forged_expired_and_wrong_audience_tokens_are_refused() {
        let a = auth(Some("lockstep"));
        let good = a.mint(&a.claims_for("bob", Plan::Free, 60)).unwrap();
        assert!(a.verify(&good).is_ok());

        let other = Authenticator::new(KeySource::Secret(vec![7; 32]), Some("lockstep".into()), None, false).unwrap();
        let forged = other.mint(&other.claims_for("bob", Plan::Premium, 60)).unwrap();
        assert_eq!(a.verify(&forged), Err(AuthError::Invalid("bad signature".into())));

        let mut old = a.claims_for("bob", Plan::Free, 0);
        old.exp = unix_now() - 3600;
        assert_eq!(a.verify(&a.mint(&old).unwrap()), Err(AuthError::Expired));

        let mut wrong = a.claims_for("bob", Plan::Free, 60);
        wrong.aud = Some("someone-else".into());
        assert_eq!(a.verify(&a.mint(&wrong).unwrap()), Err(AuthError::Invalid("wrong audience".into())));
        let mut absent = a.claims_for("bob", Plan::Free, 60);
        absent.aud = None;
        assert!(a.verify(&a.mint(&absent).unwrap()).is_err(), "a configured audience must be present");
        let with_iss =
            Authenticator::new(KeySource::Secret(SECRET.to_vec()), None, Some("platform".into()), false).unwrap();
        let no_iss = with_iss.mint(&Claims { iss: None, ..with_iss.claims_for("bob", Plan::Free, 60) }).unwrap();
        assert!(with_iss.verify(&no_iss).is_err(), "a configured issuer must be present");
        assert!(with_iss.verify(&with_iss.mint(&with_iss.claims_for("bob", Plan::Free, 60)).unwrap()).is_ok());

        assert!(matches!(a.verify("not.a.token"), Err(AuthError::Invalid(_))));
        assert!(matches!(a.verify(""), Err(AuthError::Invalid(_))));
        // alg=none must never pass.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"sub":"x","plan":"premium","exp":9999999999}"#)
        );
        assert!(a.verify(&none).is_err());
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(matches!(
            Authenticator::new(KeySource::Secret(b"short".to_vec()), None, None, false),
            Err(AuthConfigError::WeakSecret)
        ));
    }

    #[test]
    fn es256_public_key_tokens_verify() {
        let (pkcs8, path) = es256_key("es256");
        let a = Authenticator::new(KeySource::PublicKeyPem(path.clone()), None, None, false).unwrap();
        remove_key(&path);
        let claims = Claims {
            sub: "carol".into(),
            plan: Plan::Free,
            exp: unix_now() + 60,
            iat: None,
            max_devices: None,
            host_of: vec![],
            aud: None,
            iss: None,
        };
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
        assert_eq!(a.verify(&token).unwrap().sub, "carol");
        let hs = auth(None).mint(&claims).unwrap();
        assert!(a.verify(&hs).is_err(), "an HS256 token is refused where ES256 is configured");
    }

    /// Removes a key file of `es256_key`, and its directory once it is empty (the keys are read when an
    /// `Authenticator` is made).
    fn remove_key(path: &std::path::Path) {
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// A new P-256 key: its PKCS#8 document and a PEM file of its public key.
    fn es256_key(name: &str) -> (Vec<u8>, PathBuf) {
        let rng = SystemRandom::new();
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        // SPKI DER for a P-256 key: fixed prefix + the uncompressed point.
        let mut spki = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
        spki.extend_from_slice(pair.public_key().as_ref());
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", b64_std(&spki));
        let dir = std::env::temp_dir().join(format!("lockstep-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, pem).unwrap();
        (pkcs8.as_ref().to_vec(), path)
    }

    #[test]
    fn several_public_keys_and_a_secret_coexist() {
        let (k1, p1) = es256_key("multi-1");
        let (k2, p2) = es256_key("multi-2");
        let (k3, p3) = es256_key("multi-3");
        let a = Authenticator::with_keys(
            Keys { secret: Some(SECRET.to_vec()), public_keys: vec![p1.clone(), p2.clone()], jwks: None },
            None,
            None,
            false,
        )
        .unwrap();
        for p in [&p1, &p2, &p3] {
            remove_key(p);
        }
        let claims = a.claims_for("dave", Plan::Free, 60);
        let sign = |k: &[u8], kid: Option<&str>| {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = kid.map(Into::into);
            jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(k)).unwrap()
        };
        assert_eq!(a.verify(&sign(&k1, None)).unwrap().sub, "dave");
        assert_eq!(a.verify(&sign(&k2, None)).unwrap().sub, "dave", "the second file's key is tried too");
        assert_eq!(a.verify(&sign(&k2, Some("whatever"))).unwrap().sub, "dave", "files are tried whatever the kid");
        assert_eq!(a.verify(&sign(&k3, None)), Err(AuthError::Invalid("bad signature".into())));
        assert_eq!(a.verify(&a.mint(&claims).unwrap()).unwrap().sub, "dave", "HS256 with the secret still works");
        let expired = Claims { exp: unix_now() - 600, ..claims.clone() };
        let old =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &expired, &EncodingKey::from_ec_der(&k2)).unwrap();
        assert_eq!(a.verify(&old), Err(AuthError::Expired), "the key that matches decides: expired, not bad signature");
        let only_files = Authenticator::with_keys(Keys { public_keys: vec![], ..Keys::default() }, None, None, false);
        assert!(matches!(only_files, Err(AuthConfigError::NoKey)));
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn b64_std(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn hex_bytes(h: &str) -> Vec<u8> {
        (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
    }
}
