//! A throwaway certificate authority made with the `openssl` CLI (`.ci/test`
//! installs it): a CA and leaf certificates it issues, ECDSA P-256, for
//! `localhost`, `127.0.0.1` and `::1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::fresh_dir;

/// A CA in its own directory.
pub struct Ca {
    pub dir: PathBuf,
    /// The CA certificate (PEM): what clients trust.
    pub cert: PathBuf,
    key: PathBuf,
}

/// A certificate the CA issued, and its key (PKCS#8 PEM).
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed (.ci/test installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        let dir = fresh_dir(&format!("pki-{name}"));
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "3650",
                "-subj",
                &format!("/CN=Lockstep test CA {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Ca { cert: dir.join("ca.crt"), key: dir.join("ca.key"), dir }
    }

    /// A server certificate for localhost, 127.0.0.1 and ::1, valid `days` days from now.
    pub fn issue(&self, name: &str, days: u32) -> Leaf {
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let (key, csr, cert) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=localhost",
            ],
        );
        let ca_cert = self.cert.to_str().unwrap();
        let ca_key = self.key.to_str().unwrap();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                ca_cert,
                "-CAkey",
                ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                &days.to_string(),
                "-extfile",
                ext.to_str().unwrap(),
            ],
        );
        Leaf { cert: self.dir.join(cert), key: self.dir.join(key) }
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
