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

mod manager;
mod pair;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use wtransport::tls::rustls;

pub use manager::CertManager;
pub(crate) use pair::CertPair;
pub use pair::{DevPair, write_dev_pair};

/// Loads `cert` and `key` as `serve --cert --key` would, and checks that
/// they make a TLS configuration (the key fits the certificate).
pub fn check_files(cert: &std::path::Path, key: &std::path::Path) -> Result<(), CertError> {
    pair::load_pair(cert, key)?.tls_config().map(|_| ())
}

/// Subject alternative names of generated certificates.
pub(crate) const DEV_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Validity of a generated certificate (Chrome's limit for hashes is 14 days).
pub(crate) const VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// How far before its generation a certificate's validity starts (clock skew).
pub(crate) const BACKDATE: Duration = Duration::from_secs(3600);
/// Age of the served generated certificate at which the next one is made and published.
pub(crate) const PREPARE_AT: Duration = Duration::from_secs(9 * 24 * 3600);
/// Age of the served generated certificate at which the next one replaces it.
pub(crate) const ROTATE_AT: Duration = Duration::from_secs(10 * 24 * 3600);
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
