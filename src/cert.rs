//! TLS certificates of the WebTransport endpoint: generated or loaded, rotated
//! or reloaded without a restart, and published for clients.
//!
//! - **No `--cert`/`--key`**: a self-signed ECDSA P-256 certificate for
//!   `localhost`, `127.0.0.1` and `::1`, valid for 13 days from one hour ago
//!   (Chrome accepts at most 14 days for `serverCertificateHashes`). Once the
//!   served certificate is [`PREPARE_AT`] old, the next one is generated and
//!   published as "next"; at [`ROTATE_AT`] it is served instead. Existing
//!   sessions keep their connection (the endpoint's config is reloaded, not
//!   rebound).
//! - **`--cert`/`--key`** (PEM): loaded at start (an error is fatal), and
//!   reloaded when either file's modification time or size changes (polled)
//!   or on SIGHUP. A reload that fails keeps the served certificate and logs
//!   a warning.
//!
//! Either way the SHA-256 of the served leaf certificate (and of the next one,
//! if any) is published as [`Published`]: `GET /api/certificate` and
//! `GET /certificate.sha256`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};
use wtransport::Identity;
use wtransport::tls::Certificate;
use wtransport::tls::rustls;
use wtransport::tls::rustls::pki_types::pem::PemObject;
use wtransport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use wtransport::tls::self_signed::time::{Duration as TimeDuration, OffsetDateTime};

/// Subject alternative names of generated certificates.
pub const DEV_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Validity of a generated certificate (Chrome's limit for hashes is 14 days).
pub const VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// How far before its generation a certificate's validity starts (clock skew).
pub const BACKDATE: Duration = Duration::from_secs(3600);
/// Age of the served generated certificate at which the next one is made and published.
pub const PREPARE_AT: Duration = Duration::from_secs(9 * 24 * 3600);
/// Age of the served generated certificate at which the next one replaces it.
pub const ROTATE_AT: Duration = Duration::from_secs(10 * 24 * 3600);

/// A certificate problem.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The certificate does not parse as X.509.
    #[error("invalid certificate: {0}")]
    Invalid(String),
    /// rustls refused the pair (for example, the key does not match the certificate).
    #[error("unusable certificate and key: {0}")]
    Tls(#[from] rustls::Error),
    /// Generating a certificate failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    /// The endpoint refused the new configuration.
    #[error("cannot install the certificate: {0}")]
    Install(std::io::Error),
    /// The operation needs a generated certificate, but files are configured.
    #[error("certificates come from files; reload them instead")]
    FromFiles,
}

/// A certificate chain and its private key.
pub struct CertPair {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
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
    pub fn tls_config(&self) -> Result<rustls::ServerConfig, CertError> {
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
pub struct PublishedHash {
    /// Always `"sha-256"`.
    pub algorithm: &'static str,
    /// Lowercase hex of the SHA-256 of the certificate's DER.
    pub value: String,
}

/// What `GET /api/certificate` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// The served certificate first, then the next one if it is already known.
    pub hashes: Vec<PublishedHash>,
    /// When the served certificate expires, in Unix seconds.
    pub not_after: u64,
}

/// A loaded or generated certificate.
#[derive(Debug, Clone)]
struct Cert {
    pair: CertPair,
    hash: [u8; 32],
    not_after: u64,
    /// When it was generated (generated certificates only).
    born: SystemTime,
}

impl Cert {
    fn new(pair: CertPair, born: SystemTime) -> Result<Cert, CertError> {
        let leaf = pair.chain.first().ok_or_else(|| CertError::Invalid("empty certificate chain".into()))?;
        let hash =
            *Certificate::from_der(leaf.to_vec()).map_err(|e| CertError::Invalid(e.to_string()))?.hash().as_ref();
        let (_, x509) = x509_parser::parse_x509_certificate(leaf).map_err(|e| CertError::Invalid(e.to_string()))?;
        let not_after = u64::try_from(x509.validity().not_after.timestamp()).unwrap_or(0);
        Ok(Cert { pair, hash, not_after, born })
    }

    fn published(&self) -> PublishedHash {
        PublishedHash { algorithm: "sha-256", value: hex(&self.hash) }
    }
}

/// Generates a self-signed ECDSA P-256 identity for `sans`, valid for
/// [`VALIDITY`] from [`BACKDATE`] ago.
pub fn generate_identity<S: AsRef<str>>(sans: &[S]) -> Result<Identity, CertError> {
    let not_before = OffsetDateTime::now_utc() - TimeDuration::try_from(BACKDATE).expect("small");
    Identity::self_signed_builder()
        .subject_alt_names(sans.iter().map(AsRef::as_ref))
        .not_before(not_before)
        .not_after(not_before + TimeDuration::try_from(VALIDITY).expect("small"))
        .build()
        .map_err(|e| CertError::Generate(e.to_string()))
}

fn generate(sans: &[String]) -> Result<Cert, CertError> {
    Cert::new(CertPair::from_identity(&generate_identity(sans)?), SystemTime::now())
}

/// Loads a PEM certificate chain and a PEM private key.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertPair, CertError> {
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
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Installs a certificate into whatever serves it (the QUIC endpoint).
type Installer = Box<dyn Fn(&CertPair) -> Result<(), CertError> + Send + Sync>;

#[derive(Debug)]
enum Source {
    SelfSigned { sans: Vec<String> },
    Files { cert: PathBuf, key: PathBuf },
}

/// Modification time and size of the two files, to notice replacements.
type Stamp = [Option<(SystemTime, u64)>; 2];

#[derive(Debug)]
struct State {
    current: Cert,
    next: Option<Cert>,
    stamp: Stamp,
}

struct Inner {
    source: Source,
    poll: Duration,
    state: Mutex<State>,
    installer: OnceLock<Installer>,
}

/// The served certificate and its lifecycle. Cheap to clone.
#[derive(Clone)]
pub struct CertManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for CertManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertManager").field("source", &self.inner.source).field("published", &self.published()).finish()
    }
}

impl CertManager {
    /// Generates a self-signed certificate for [`DEV_SANS`]; `poll` is how
    /// often [`CertManager::watch`] checks the rotation schedule.
    pub fn self_signed(poll: Duration) -> Result<CertManager, CertError> {
        let sans: Vec<String> = DEV_SANS.iter().map(|s| (*s).to_owned()).collect();
        let current = generate(&sans)?;
        Ok(Self::new(Source::SelfSigned { sans }, poll, current, [None, None]))
    }

    /// Loads `cert` and `key`; `poll` is how often [`CertManager::watch`]
    /// checks them for changes.
    pub fn from_files(cert: PathBuf, key: PathBuf, poll: Duration) -> Result<CertManager, CertError> {
        let stamp = stamp(&cert, &key);
        let pair = load_pair(&cert, &key)?;
        pair.tls_config()?;
        let current = Cert::new(pair, SystemTime::now())?;
        warn_if_expiring(current.not_after);
        Ok(Self::new(Source::Files { cert, key }, poll, current, stamp))
    }

    fn new(source: Source, poll: Duration, current: Cert, stamp: Stamp) -> CertManager {
        let state = Mutex::new(State { current, next: None, stamp });
        CertManager {
            inner: Arc::new(Inner {
                source,
                poll: poll.max(Duration::from_millis(10)),
                state,
                installer: OnceLock::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The certificate and key being served.
    pub fn current_pair(&self) -> CertPair {
        self.lock().current.pair.clone()
    }

    /// Lowercase hex SHA-256 of the served certificate.
    pub fn current_sha256(&self) -> String {
        hex(&self.lock().current.hash)
    }

    /// The published hashes (served first, then next) and the expiry.
    pub fn published(&self) -> Published {
        let s = self.lock();
        let mut hashes = vec![s.current.published()];
        hashes.extend(s.next.as_ref().map(Cert::published));
        Published { hashes, not_after: s.current.not_after }
    }

    /// Sets what installs a new certificate (once, after the endpoint is
    /// bound). Until then, changes only affect what [`Self::current_pair`] returns.
    pub fn set_installer(&self, install: impl Fn(&CertPair) -> Result<(), CertError> + Send + Sync + 'static) {
        if self.inner.installer.set(Box::new(install)).is_err() {
            warn!("certificate installer set twice; keeping the first");
        }
    }

    fn install(&self, pair: &CertPair) -> Result<(), CertError> {
        match self.inner.installer.get() {
            Some(install) => install(pair),
            None => Ok(()),
        }
    }

    /// Generates the next certificate now (if there is none yet) and publishes
    /// its hash as "next"; returns that hash. Generated certificates only.
    pub fn prepare_next(&self) -> Result<String, CertError> {
        let Source::SelfSigned { sans } = &self.inner.source else {
            return Err(CertError::FromFiles);
        };
        let mut s = self.lock();
        if s.next.is_none() {
            s.next = Some(generate(sans)?);
            info!(next = %hex(&s.next.as_ref().expect("set").hash), "next certificate published");
        }
        Ok(hex(&s.next.as_ref().expect("set").hash))
    }

    /// Rotates at once: serves the next certificate (generated now if there
    /// is none). Existing sessions stay up. With files, reloads them.
    pub fn rotate_now(&self) -> Result<(), CertError> {
        if let Source::Files { .. } = self.inner.source {
            return self.reload_files(true).map(|_| ());
        }
        self.prepare_next()?;
        let mut s = self.lock();
        let next = s.next.take().expect("prepared");
        if let Err(e) = self.install(&next.pair) {
            s.next = Some(next);
            return Err(e);
        }
        info!(sha256 = %hex(&next.hash), not_after = next.not_after, "certificate rotated");
        s.current = next;
        Ok(())
    }

    /// Reloads the files if they changed (or always, with `force`). Returns
    /// whether a new certificate is being served.
    pub fn reload_files(&self, force: bool) -> Result<bool, CertError> {
        let Source::Files { cert, key } = &self.inner.source else {
            return Ok(false);
        };
        let now = stamp(cert, key);
        let mut s = self.lock();
        if !force && now == s.stamp {
            return Ok(false);
        }
        // Remember what was tried: a half-written pair is retried when the
        // other file changes too, not on every poll.
        s.stamp = now;
        let pair = load_pair(cert, key)?;
        pair.tls_config()?;
        let next = Cert::new(pair, SystemTime::now())?;
        if next.hash == s.current.hash && !force {
            return Ok(false);
        }
        self.install(&next.pair)?;
        info!(sha256 = %hex(&next.hash), not_after = next.not_after, cert = %cert.display(), "certificate reloaded");
        warn_if_expiring(next.not_after);
        s.current = next;
        Ok(true)
    }

    /// One scheduled check at wall-clock time `now`.
    fn check(&self, now: SystemTime) {
        match &self.inner.source {
            Source::SelfSigned { .. } => {
                let age = now.duration_since(self.lock().current.born).unwrap_or_default();
                let result = if age >= ROTATE_AT {
                    self.rotate_now()
                } else if age >= PREPARE_AT {
                    self.prepare_next().map(|_| ())
                } else {
                    Ok(())
                };
                if let Err(e) = result {
                    warn!(error = %e, "certificate rotation failed; retrying");
                }
            }
            Source::Files { .. } => {
                if let Err(e) = self.reload_files(false) {
                    warn!(error = %e, "certificate reload failed; still serving the previous certificate");
                }
            }
        }
    }

    /// Runs the schedule (rotation or file polling) and reloads files on
    /// SIGHUP, until `shutdown` turns true.
    pub async fn watch(self, mut shutdown: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(self.inner.poll);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        let mut hup = Hangup::new();
        loop {
            tokio::select! {
                _ = every.tick() => self.check(SystemTime::now()),
                _ = hup.recv() => match self.inner.source {
                    Source::Files { .. } => {
                        info!("SIGHUP: reloading the certificate");
                        if let Err(e) = self.reload_files(true) {
                            warn!(error = %e, "certificate reload failed; still serving the previous certificate");
                        }
                    }
                    Source::SelfSigned { .. } => info!("SIGHUP: the certificate is generated; nothing to reload"),
                },
                _ = crate::util::wait_true(&mut shutdown) => return,
            }
        }
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()));
    [one(cert), one(key)]
}

fn warn_if_expiring(not_after: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if not_after <= now {
        warn!(not_after, "the configured certificate has expired");
    } else if not_after - now < 3 * 24 * 3600 {
        warn!(not_after, "the configured certificate expires within three days");
    }
}

/// SIGHUP, where there is such a thing.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Self {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| warn!(error = %e, "cannot listen for SIGHUP"))
                .ok();
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            if s.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn generated_certificates_fit_chrome_hash_rules_and_rotate() {
        let m = CertManager::self_signed(Duration::from_secs(1)).unwrap();
        let first = m.published();
        assert_eq!(first.hashes.len(), 1);
        assert_eq!(first.hashes[0].value, m.current_sha256());
        assert_eq!(first.hashes[0].value.len(), 64);
        // Valid for 13 days from an hour ago: well under Chrome's 14 days.
        let left = first.not_after - unix_now();
        assert!((VALIDITY - BACKDATE).as_secs() - 60 <= left && left <= (VALIDITY - BACKDATE).as_secs(), "{left}");
        let pair = m.current_pair();
        let (_, x509) = x509_parser::parse_x509_certificate(&pair.chain[0]).unwrap();
        let v = x509.validity();
        assert!(v.not_after.timestamp() - v.not_before.timestamp() <= 13 * 24 * 3600);
        use x509_parser::extensions::GeneralName;
        let sans: Vec<String> = x509
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => (*d).to_owned(),
                &GeneralName::IPAddress(&[a, b, c, d]) => std::net::Ipv4Addr::new(a, b, c, d).to_string(),
                GeneralName::IPAddress(ip) => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, DEV_SANS);
        assert!(pair.tls_config().is_ok());

        let next = m.prepare_next().unwrap();
        assert_eq!(m.prepare_next().unwrap(), next, "prepared once");
        let both = m.published();
        assert_eq!(
            both.hashes.iter().map(|h| h.value.as_str()).collect::<Vec<_>>(),
            [first.hashes[0].value.as_str(), &next]
        );
        m.rotate_now().unwrap();
        let after = m.published();
        assert_eq!(after.hashes.len(), 1);
        assert_eq!(after.hashes[0].value, next);

        // The schedule: nothing before PREPARE_AT, next at PREPARE_AT, a switch at ROTATE_AT.
        let born = m.lock().current.born;
        m.check(born + PREPARE_AT - Duration::from_secs(1));
        assert_eq!(m.published().hashes.len(), 1);
        m.check(born + PREPARE_AT);
        let upcoming = m.published().hashes[1].value.clone();
        m.check(born + ROTATE_AT);
        assert_eq!(m.published().hashes.iter().map(|h| h.value.clone()).collect::<Vec<_>>(), [upcoming]);
    }

    #[test]
    fn a_failed_install_keeps_serving_the_old_certificate() {
        let m = CertManager::self_signed(Duration::from_secs(1)).unwrap();
        let before = m.current_sha256();
        m.set_installer(|_| Err(CertError::Install(std::io::Error::other("refused"))));
        assert!(m.rotate_now().is_err());
        assert_eq!(m.current_sha256(), before);
        assert_eq!(m.published().hashes.len(), 2, "the next one stays published for a retry");
    }

    #[test]
    fn files_load_reload_on_change_and_refuse_mismatched_keys() {
        let dir = std::env::temp_dir().join(format!("lockstep-cert-{}", std::process::id()));
        let a = write_dev_pair(&dir.join("a"), &[]).unwrap();
        let b = write_dev_pair(&dir.join("b"), &["lan.example".into()]).unwrap();
        assert!(a.cert.ends_with("cert.pem") && a.key.ends_with("key.pem"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&a.key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let live = dir.join("live");
        std::fs::create_dir_all(&live).unwrap();
        let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
        std::fs::copy(&a.cert, &cert).unwrap();
        std::fs::copy(&a.key, &key).unwrap();
        let m = CertManager::from_files(cert.clone(), key.clone(), Duration::from_secs(1)).unwrap();
        assert_eq!(m.current_sha256(), a.sha256);
        assert_eq!(m.published().not_after, a.not_after);
        assert!(matches!(m.prepare_next(), Err(CertError::FromFiles)));
        assert!(!m.reload_files(false).unwrap(), "unchanged");

        // Half-replaced (new cert, old key): refused, old one kept.
        std::fs::copy(&b.cert, &cert).unwrap();
        assert!(matches!(m.reload_files(false), Err(CertError::Tls(_))));
        assert_eq!(m.current_sha256(), a.sha256);
        std::fs::copy(&b.key, &key).unwrap();
        assert!(m.reload_files(true).unwrap());
        assert_eq!(m.current_sha256(), b.sha256);

        // Garbage is an error at start.
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(matches!(CertManager::from_files(cert, key, Duration::from_secs(1)), Err(CertError::Pem { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
