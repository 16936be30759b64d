//! Generation, rotation and reloading, without a server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// A self-signed ECDSA P-256 pair for localhost valid from now for `days` days (+ `extra` seconds).
fn p256_valid_for(days: i64, extra: i64) -> CertPair {
    use wtransport::tls::self_signed::time::{Duration as T, OffsetDateTime};
    let from = OffsetDateTime::now_utc();
    let id = wtransport::Identity::self_signed_builder()
        .subject_alt_names(["localhost"])
        .not_before(from)
        .not_after(from + T::days(days) + T::seconds(extra))
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("lockstep-cert-span-{}-{days}-{extra}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let pem: String = id.certificate_chain().as_slice().iter().map(wtransport::tls::Certificate::to_pem).collect();
    std::fs::write(&cert, pem).unwrap();
    std::fs::write(&key, id.private_key().to_secret_pem()).unwrap();
    let pair = pair::load_pair(&cert, &key).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    pair
}

#[test]
fn hashes_apply_only_to_p256_certificates_valid_at_most_14_days() {
    assert!(CertManager::self_signed(Duration::from_secs(1)).unwrap().published().hashes_apply, "generated");
    let applies = |pair: CertPair| pair::Cert::new(pair, SystemTime::now()).unwrap().hashes_apply;
    assert!(applies(p256_valid_for(14, 0)), "exactly 14 days");
    assert!(!applies(p256_valid_for(14, 1)), "a second more");
    assert!(!applies(p256_valid_for(90, 0)), "a CA's 90 days");
}

/// `openssl req` self-signed certificates with other keys (openssl is
/// installed by `.ci/test`, for these and the browser tests).
#[test]
fn hashes_do_not_apply_to_rsa_or_p384_keys_even_when_short_lived() {
    let dir = std::env::temp_dir().join(format!("lockstep-cert-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let make = |name: &str, newkey: &[&str]| {
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "10", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(newkey)
            .output()
            .expect("openssl must be installed (.ci/test installs it)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        pair::Cert::new(pair::load_pair(&cert, &key).unwrap(), SystemTime::now()).unwrap().hashes_apply
    };
    assert!(make("p256", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]), "the control: P-256, 10 days");
    assert!(!make("p384", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]));
    assert!(!make("rsa", &["-newkey", "rsa:2048"]));
    let _ = std::fs::remove_dir_all(&dir);
}
