//! TLS settings: certificates and keys loaded at start, with errors that name the file and the
//! problem, turned into rustls configurations that every runtime shares.
//!
//! - A listener (`ssl:`/`tls:` endpoint, [`TlsListen`]) gets a [`ServerConfig`] from
//!   [`server_config`]: its certificate chain (`certKey=` then `extraCertChain=`), its key
//!   (`privateKey=`, checked against the certificate), and with `clientCA=` a verifier that
//!   requires a client certificate chaining to one of the CA certificates in that file.
//! - Outgoing connections (`tls:HOST:PORT`) get a [`ClientConfig`] from [`client_config`]: the
//!   platform's trust roots, or only the `--tls-ca` file when given, and optionally a client
//!   certificate (`--tls-client-cert`, `--tls-client-key`). Verification is never turned off.
//! - After a handshake, [`identity`] reads the peer's certificate into the core's
//!   [`Identity`]: subject CN, DNS names (bounded) and the SHA-256 of the DER bytes.
//!
//! The crypto provider is ring (README "TLS": smaller and faster to build than aws-lc-rs, no C
//! toolchain beyond what ring needs, static builds work). The byte transform that runs
//! handshakes and encrypts on every runtime is [`crate::transport`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use vtp_core::endpoint::TlsListen;
use vtp_core::identity::{DNS_NAMES_MAX, Identity, NAME_LEN_MAX};

/// Largest certificate, key or CA file read (1 MiB): these are operator files, but a wrong
/// path (a device, a huge log) must not hang or exhaust the start-up.
pub const PEM_FILE_MAX: u64 = 1024 * 1024;

/// A TLS setting that cannot be used: the file, and what is wrong with it.
#[derive(Debug)]
pub struct TlsError {
    /// The file concerned, if any.
    pub file: Option<PathBuf>,
    /// What is wrong and what to do.
    pub problem: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "{}: {}", p.display(), self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

impl std::error::Error for TlsError {}

fn error(file: &Path, problem: impl Into<String>) -> TlsError {
    TlsError {
        file: Some(file.to_owned()),
        problem: problem.into(),
    }
}

/// A warning found while loading (an expired certificate): the server still starts.
pub type Warnings = Vec<String>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // rustls 0.23.48 deprecated ring's provider for lacking post-quantum key exchange; see
    // README "TLS" for the measured trade-off that keeps it.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    // ring's list starts with P-384, which costs about 5.6 times an X25519 handshake (measured:
    // 2.1 ms against 0.37 ms, both sides): X25519 first, then P-256, P-384 last.
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    Arc::new(provider)
}

fn read_pem_file(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| {
        error(
            path,
            format!("cannot open the {what}: {e}; check the path and permissions"),
        )
    })?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error(path, format!("cannot read the {what}: {e}")))?;
    if bytes.len() as u64 > PEM_FILE_MAX {
        return Err(error(
            path,
            format!("the {what} is larger than 1 MiB: not a PEM file"),
        ));
    }
    Ok(bytes)
}

/// Every certificate in a PEM file; at least one.
///
/// # Errors
///
/// The file cannot be read, is not PEM, or holds no certificate.
pub fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem_file(path, what)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = certs.map_err(|e| error(path, format!("the {what} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            path,
            format!(
                "no certificate in the {what}: expected PEM blocks \"-----BEGIN CERTIFICATE-----\""
            ),
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
///
/// The file cannot be read, is not PEM, or holds no private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem_file(path, "private key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => error(
            path,
            "no private key in the file: expected a PEM block \"-----BEGIN PRIVATE KEY-----\" \
             (or RSA/EC PRIVATE KEY)",
        ),
        e => error(path, format!("the private key is not valid PEM: {e}")),
    })
}

/// Warns about certificates outside their validity period (a broker still starts: the
/// operator may be replacing them).
fn check_validity(path: &Path, certs: &[CertificateDer<'_>], warnings: &mut Warnings) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    for (i, der) in certs.iter().enumerate() {
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
            let v = cert.validity();
            let subject = cert.subject().to_string();
            if v.not_after.timestamp() < now {
                warnings.push(format!(
                    "{}: certificate {} ({subject}) expired on {}; peers will refuse it",
                    path.display(),
                    i + 1,
                    v.not_after
                ));
            } else if v.not_before.timestamp() > now {
                warnings.push(format!(
                    "{}: certificate {} ({subject}) is not valid before {}",
                    path.display(),
                    i + 1,
                    v.not_before
                ));
            }
        }
    }
}

fn roots_from(path: &Path, what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, what)? {
        roots
            .add(cert)
            .map_err(|e| error(path, format!("unusable CA certificate in the {what}: {e}")))?;
    }
    Ok(roots)
}

/// The rustls configuration of one TLS listener.
///
/// # Errors
///
/// A file is missing, unreadable, not PEM, holds no certificate or key, or the key does not
/// match the certificate.
pub fn server_config(files: &TlsListen) -> Result<(Arc<ServerConfig>, Warnings), TlsError> {
    let mut warnings = Vec::new();
    let mut chain = load_certs(&files.cert_key, "certificate (certKey=)")?;
    check_validity(&files.cert_key, &chain, &mut warnings);
    if let Some(extra) = &files.extra_cert_chain {
        chain.extend(load_certs(extra, "certificate chain (extraCertChain=)")?);
    }
    let key = load_key(&files.private_key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            file: None,
            problem: format!("TLS setup failed: {e}"),
        })?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = roots_from(ca, "client CA file (clientCA=)")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| error(ca, format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        error(
            &files.private_key,
            format!(
                "the private key does not match the certificate in {} ({e})",
                files.cert_key.display()
            ),
        )
    })?;
    Ok((Arc::new(config), warnings))
}

/// Settings of outgoing TLS connections (`--subscribe tls:`, `vtp send tls:`, `vtp listen
/// tls:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// `--tls-ca FILE`: trust only these CA certificates (PEM); otherwise the platform's roots.
    pub ca: Option<PathBuf>,
    /// `--tls-client-cert FILE`: present this certificate (PEM, chain after it).
    pub cert: Option<PathBuf>,
    /// `--tls-client-key FILE`: its private key.
    pub key: Option<PathBuf>,
}

/// The rustls configuration of outgoing connections.
///
/// # Errors
///
/// A file cannot be used, only one of the client certificate and key is given, or (without
/// `--tls-ca`) the platform has no trust roots.
pub fn client_config(files: &ClientFiles) -> Result<(Arc<ClientConfig>, Warnings), TlsError> {
    let mut warnings = Vec::new();
    let roots = match &files.ca {
        Some(ca) => roots_from(ca, "CA file (--tls-ca)")?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(String::new, |e| format!(" ({e})"));
                return Err(TlsError {
                    file: None,
                    problem: format!(
                        "no trust roots found on this system{why}; install the ca-certificates \
                         package or give --tls-ca FILE"
                    ),
                });
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            file: None,
            problem: format!("TLS setup failed: {e}"),
        })?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert, "client certificate (--tls-client-cert)")?;
            check_validity(cert, &chain, &mut warnings);
            let k = load_key(key)?;
            builder.with_client_auth_cert(chain, k).map_err(|e| {
                error(
                    key,
                    format!(
                        "the private key does not match the certificate in {} ({e})",
                        cert.display()
                    ),
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError {
                file: None,
                problem: "--tls-client-cert and --tls-client-key go together: give both or neither"
                    .into(),
            });
        }
    };
    Ok((Arc::new(config), warnings))
}

/// The identity of a verified peer certificate (its DER bytes).
///
/// The certificate has been verified by rustls before this is called; a certificate this
/// parser cannot read still gets its fingerprint (and no names). Names are bounded: at most
/// [`DNS_NAMES_MAX`] DNS names, each at most [`NAME_LEN_MAX`] bytes (longer ones are dropped).
pub fn identity(der: &[u8]) -> Identity {
    let sha256: [u8; 32] = Sha256::digest(der).into();
    let mut id = Identity {
        common_name: None,
        dns_names: Vec::new(),
        sha256,
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return id;
    };
    id.common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| cn.len() <= NAME_LEN_MAX)
        .map(str::to_owned);
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = name
                && d.len() <= NAME_LEN_MAX
                && id.dns_names.len() < DNS_NAMES_MAX
            {
                id.dns_names.push((*d).to_owned());
            }
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("vtp-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// A self-signed certificate and its key, valid or expired, written to `d`.
    fn pair(d: &Path, name: &str, expired: bool) -> (PathBuf, PathBuf) {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let (c, k) = (d.join(format!("{name}.pem")), d.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn listen(cert: &Path, key: &Path, ca: Option<&Path>) -> TlsListen {
        TlsListen {
            private_key: key.to_owned(),
            cert_key: cert.to_owned(),
            extra_cert_chain: None,
            client_ca: ca.map(Path::to_owned),
        }
    }

    fn server_err(files: &TlsListen) -> String {
        server_config(files)
            .map(|_| ())
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn each_bad_server_file_is_named_with_its_problem() {
        let d = dir("server");
        let (cert, key) = pair(&d.0, "a", false);
        let (_, other_key) = pair(&d.0, "b", false);
        let missing = d.0.join("missing.pem");
        let text = d.0.join("text.pem");
        std::fs::write(&text, "hello\n").unwrap();
        let big = d.0.join("big.pem");
        std::fs::write(&big, vec![b'x'; (PEM_FILE_MAX + 1) as usize]).unwrap();

        let e = server_err(&listen(&missing, &key, None));
        assert!(
            e.contains("missing.pem") && e.contains("cannot open the certificate"),
            "{e}"
        );
        let e = server_err(&listen(&text, &key, None));
        assert!(
            e.contains("text.pem") && e.contains("no certificate"),
            "{e}"
        );
        let e = server_err(&listen(&cert, &text, None));
        assert!(
            e.contains("text.pem") && e.contains("no private key"),
            "{e}"
        );
        let e = server_err(&listen(&cert, &other_key, None));
        assert!(e.contains("does not match the certificate"), "{e}");
        let e = server_err(&listen(&cert, &key, Some(&text)));
        assert!(e.contains("clientCA="), "{e}");
        let e = server_err(&listen(&big, &key, None));
        assert!(e.contains("larger than 1 MiB"), "{e}");
        let (config, warnings) = server_config(&listen(&cert, &key, Some(&cert))).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(config.alpn_protocols.is_empty());
    }

    #[test]
    fn x25519_is_offered_first() {
        let names: Vec<_> = provider().kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            names,
            [
                rustls::NamedGroup::X25519,
                rustls::NamedGroup::secp256r1,
                rustls::NamedGroup::secp384r1
            ]
        );
    }

    #[test]
    fn an_expired_certificate_is_a_warning_not_an_error() {
        let d = dir("expired");
        let (cert, key) = pair(&d.0, "old", true);
        let (_, warnings) = server_config(&listen(&cert, &key, None)).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("expired"), "{warnings:?}");
    }

    #[test]
    fn client_settings_are_checked_too() {
        let d = dir("client");
        let (cert, key) = pair(&d.0, "c", false);
        let (_, other_key) = pair(&d.0, "d", false);
        let ok = ClientFiles {
            ca: Some(cert.clone()),
            cert: Some(cert.clone()),
            key: Some(key.clone()),
        };
        assert!(client_config(&ok).is_ok());
        let half = ClientFiles {
            key: None,
            ..ok.clone()
        };
        let e = client_config(&half).err().unwrap().to_string();
        assert!(e.contains("go together"), "{e}");
        let mismatch = ClientFiles {
            key: Some(other_key),
            ..ok.clone()
        };
        let e = client_config(&mismatch).err().unwrap().to_string();
        assert!(e.contains("does not match"), "{e}");
        let bad_ca = ClientFiles {
            ca: Some(d.0.join("nope.pem")),
            ..ok
        };
        let e = client_config(&bad_ca).err().unwrap().to_string();
        assert!(e.contains("nope.pem") && e.contains("--tls-ca"), "{e}");
    }

    #[test]
    fn identity_reads_names_and_fingerprint_and_bounds_them() {
        let mut p = rcgen::CertificateParams::new(
            (0..40)
                .map(|i| format!("h{i}.example.org"))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "author1");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let id = identity(cert.der());
        assert_eq!(id.common_name.as_deref(), Some("author1"));
        assert_eq!(id.dns_names.len(), DNS_NAMES_MAX);
        assert_eq!(id.dns_names[0], "h0.example.org");
        let want: [u8; 32] = Sha256::digest(cert.der()).into();
        assert_eq!(id.sha256, want);
        // Not a certificate at all: a fingerprint, no names.
        let junk = identity(b"junk");
        assert!(junk.common_name.is_none() && junk.dns_names.is_empty());
    }
}
