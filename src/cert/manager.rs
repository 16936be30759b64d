//! The served certificate's lifecycle: rotation of generated certificates,
//! reloading of configured files, publication of hashes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::{info, warn};

use super::pair::{Cert, CertPair, Published, generate, hex, load_pair};
use super::{CertError, DEV_SANS, PREPARE_AT, ROTATE_AT};

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
pub(super) struct State {
    pub(super) current: Cert,
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
    pub(crate) fn self_signed(poll: Duration) -> Result<CertManager, CertError> {
        let sans: Vec<String> = DEV_SANS.iter().map(|s| (*s).to_owned()).collect();
        let current = generate(&sans)?;
        Ok(Self::new(Source::SelfSigned { sans }, poll, current, [None, None]))
    }

    /// Loads `cert` and `key`; `poll` is how often [`CertManager::watch`]
    /// checks them for changes.
    pub(crate) fn from_files(cert: PathBuf, key: PathBuf, poll: Duration) -> Result<CertManager, CertError> {
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The certificate and key being served.
    pub(crate) fn current_pair(&self) -> CertPair {
        self.lock().current.pair.clone()
    }

    /// Lowercase hex SHA-256 of the served certificate.
    pub fn current_sha256(&self) -> String {
        hex(&self.lock().current.hash)
    }

    /// The published hashes (served first, then next) and the expiry.
    pub(crate) fn published(&self) -> Published {
        let s = self.lock();
        let mut hashes = vec![s.current.published()];
        hashes.extend(s.next.as_ref().map(Cert::published));
        Published { hashes, not_after: s.current.not_after, hashes_apply: s.current.hashes_apply }
    }

    /// Sets what installs a new certificate (once, after the endpoint is
    /// bound). Until then, changes only affect what [`Self::current_pair`] returns.
    pub(crate) fn set_installer(&self, install: impl Fn(&CertPair) -> Result<(), CertError> + Send + Sync + 'static) {
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
    pub(crate) fn reload_files(&self, force: bool) -> Result<bool, CertError> {
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
    pub(super) fn check(&self, now: SystemTime) {
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
    pub(crate) async fn watch(self, mut shutdown: watch::Receiver<bool>) {
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
