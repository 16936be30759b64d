//! Certificates themselves: generated, loaded from PEM files, written for
//! development, and what is published about them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use wtransport::Identity;
use wtransport::tls::Certificate;
use wtransport::tls::rustls;
use wtransport::tls::rustls::pki_types::pem::PemObject;
use wtransport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use wtransport::tls::self_signed::time::{Duration as TimeDuration, OffsetDateTime};

use super::{BACKDATE, CertError, DEV_SANS, VALIDITY};

/// A certificate chain and its private key.
pub(crate) struct CertPair {
    /// Leaf first.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub(crate) key: PrivateKeyDer<'static>,
}

impl fmt::Debug for CertPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPair").field("chain", &self.chain.len()).field("key", &"<secret>").finish()
    }
}

impl Clone for CertPair {
    fn clone(&self) -> Self {
        CertPair { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl CertPair {
    /// A TLS 1.3 server config serving this pair (ring provider, no client
    /// auth, no ALPN). Fails if the key does not match the certificate.
    pub(crate) fn tls_config(&self) -> Result<rustls::ServerConfig, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(cfg)
    }

    fn from_identity(id: &Identity) -> CertPair {
        CertPair {
            chain: id.certificate_chain().as_slice().iter().map(|c| CertificateDer::from(c.der().to_vec())).collect(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.private_key().secret_der().to_vec())),
        }
    }
}

/// One hash in [`Published`], shaped like a W3C `WebTransportHash` (the value in hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PublishedHash {
    /// Always `"sha-256"`.
    pub(crate) algorithm: &'static str,
    /// Lowercase hex of the SHA-256 of the certificate's DER.
    pub(crate) value: String,
}

/// What `GET /api/certificate` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Published {
    /// The served certificate first, then the next one if it is already known.
    pub(crate) hashes: Vec<PublishedHash>,
    /// When the served certificate expires, in Unix seconds.
    pub(crate) not_after: u64,
    /// Whether a browser accepts the served certificate by these hashes
    /// (WebTransport `serverCertificateHashes`): only an ECDSA P-256
    /// certificate valid for at most [`MAX_HASH_VALIDITY_SECS`]. When false,
    /// the hashes stay listed (they still identify the certificate) but
    /// clients must not pin them and rely on normal validation (a CA).
    pub(crate) hashes_apply: bool,
}

/// The longest validity (`notAfter - notBefore`) of a certificate that
/// browsers accept by hash: 14 days (W3C WebTransport, Chromium).
pub(crate) const MAX_HASH_VALIDITY_SECS: i64 = 14 * 24 * 3600;

/// A loaded or generated certificate.
#[derive(Debug, Clone)]
pub(super) struct Cert {
    pub(super) pair: CertPair,
    pub(super) hash: [u8; 32],
    pub(super) not_after: u64,
    /// Whether browsers accept it by hash (see [`Published::hashes_apply`]).
    pub(super) hashes_apply: bool,
    /// When it was generated (generated certificates only).
    pub(super) born: SystemTime,
}

impl Cert {
    pub(super) fn new(pair: CertPair, born: SystemTime) -> Result<Cert, CertError> {
        let leaf = pair.chain.first().ok_or_else(|| CertError::Invalid("empty certificate chain".into()))?;
        let hash =
            *Certificate::from_der(leaf.to_vec()).map_err(|e| CertError::Invalid(e.to_string()))?.hash().as_ref();
        let (_, x509) = x509_parser::parse_x509_certificate(leaf).map_err(|e| CertError::Invalid(e.to_string()))?;
        let not_after = u64::try_from(x509.validity().not_after.timestamp()).unwrap_or(0);
        let hashes_apply = hashes_apply(&x509);
        Ok(Cert { pair, hash, not_after, hashes_apply, born })
    }

    pub(super) fn published(&self) -> PublishedHash {
        PublishedHash { algorithm: "sha-256", value: hex(&self.hash) }
    }
}

/// Whether a browser accepts `cert` by its hash: the W3C WebTransport rules
/// for `serverCertificateHashes`, as Chromium enforces them: a validity
/// period of at most 14 days and an ECDSA key on P-256.
fn hashes_apply(cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
    let validity = cert.validity();
    let span = validity.not_after.timestamp() - validity.not_before.timestamp();
    let spki = &cert.tbs_certificate.subject_pki;
    let p256 = spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).is_some_and(|curve| curve == OID_EC_P256);
    (0..=MAX_HASH_VALIDITY_SECS).contains(&span) && p256
}

/// Generates a self-signed ECDSA P-256 identity for `sans`, valid for
/// [`VALIDITY`] from [`BACKDATE`] ago.
pub(crate) fn generate_identity<S: AsRef<str>>(sans: &[S]) -> Result<Identity, CertError> {
    let not_before = OffsetDateTime::now_utc() - TimeDuration::try_from(BACKDATE).expect("small");
    Identity::self_signed_builder()
        .subject_alt_names(sans.iter().map(AsRef::as_ref))
        .not_before(not_before)
        .not_after(not_before + TimeDuration::try_from(VALIDITY).expect("small"))
        .build()
        .map_err(|e| CertError::Generate(e.to_string()))
}

pub(super) fn generate(sans: &[String]) -> Result<Cert, CertError> {
    Cert::new(CertPair::from_identity(&generate_identity(sans)?), SystemTime::now())
}

/// Loads a PEM certificate chain and a PEM private key.
pub(crate) fn load_pair(cert: &Path, key: &Path) -> Result<CertPair, CertError> {
    let pem_err = |path: &Path, e: rustls::pki_types::pem::Error| match e {
        rustls::pki_types::pem::Error::Io(source) => CertError::Io { path: path.into(), source },
        other => CertError::Pem { path: path.into(), message: other.to_string() },
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e))?;
    if chain.is_empty() {
        return Err(CertError::Pem { path: cert.into(), message: "no CERTIFICATE section".into() });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
    Ok(CertPair { chain, key: key_der })
}

/// What `lockstep cert` wrote.
#[derive(Debug, Clone)]
pub struct DevPair {
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file (mode 0600 on Unix).
    pub key: PathBuf,
    /// Lowercase hex SHA-256 of the certificate.
    pub sha256: String,
    /// Expiry, in Unix seconds.
    pub not_after: u64,
}

/// Writes a generated development pair, `cert.pem` and `key.pem`, into `dir`
/// for [`DEV_SANS`] plus `extra_sans`.
pub fn write_dev_pair(dir: &Path, extra_sans: &[String]) -> Result<DevPair, CertError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Io { path, source }
    };
    let mut sans: Vec<String> = DEV_SANS.iter().map(|s| (*s).to_owned()).collect();
    sans.extend(extra_sans.iter().filter(|s| !sans.contains(s)).cloned().collect::<Vec<_>>());
    let id = generate_identity(&sans)?;
    let cert = Cert::new(CertPair::from_identity(&id), SystemTime::now())?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let pem: String = id.certificate_chain().as_slice().iter().map(Certificate::to_pem).collect();
    std::fs::write(&cert_path, pem).map_err(io(&cert_path))?;
    write_secret(&key_path, id.private_key().to_secret_pem().as_bytes()).map_err(io(&key_path))?;
    Ok(DevPair { cert: cert_path, key: key_path, sha256: hex(&cert.hash), not_after: cert.not_after })
}

fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
