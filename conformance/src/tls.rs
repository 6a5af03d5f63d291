//! TLS for the suite's connections (`vtp-conformance --tls-ca FILE`).
//!
//! When a [`Target`](crate::Target) carries a [`Tls`], every author and subscriber connection
//! of every scenario runs a TLS handshake right after the TCP connect, verifying the node's
//! certificate against the CA file only (no platform roots) and for the host name the suite was
//! given (a DNS name, or an IP address that the certificate must list as an IP SAN). The
//! scenarios then run unchanged over the encrypted stream: rustls's own blocking adapter
//! ([`StreamOwned`]) reads and writes through the same `std::net` socket, whose read deadlines
//! still apply.
//!
//! The crypto provider is ring, as in vtp itself; the suite is a client only and offers no
//! client certificate.

use std::fmt;
use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::net::Side;

/// How the suite speaks TLS to the node: whom it trusts, and which names it verifies.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    receive: ServerName<'static>,
    broadcast: ServerName<'static>,
}

impl Tls {
    /// Trusts only the CA certificates in the PEM file `ca_file`, and requires the node's
    /// certificate to be valid for `receive_host` on the receive address and for
    /// `broadcast_host` on the broadcast address (DNS names or IP addresses, as given on the
    /// command line).
    ///
    /// # Errors
    ///
    /// A message naming the file when it cannot be read or holds no usable certificate, or
    /// naming the host when it is neither a DNS name nor an IP address.
    pub fn from_ca_file(
        ca_file: &Path,
        receive_host: &str,
        broadcast_host: &str,
    ) -> Result<Self, String> {
        let roots = load_roots(ca_file)?;
        // rustls 0.23.48 deprecated ring's provider for lacking post-quantum key exchange; the
        // suite uses the provider vtp uses.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            receive: server_name(receive_host)?,
            broadcast: server_name(broadcast_host)?,
        })
    }

    /// Runs the handshake on `tcp` (a fresh connection to the node's address for `side`) until
    /// it completes or `deadline` passes.
    pub(crate) fn handshake(
        &self,
        mut tcp: TcpStream,
        side: Side,
        deadline: Instant,
    ) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
        let name = match side {
            Side::Receive => &self.receive,
            Side::Broadcast => &self.broadcast,
        };
        let mut conn = ClientConnection::new(Arc::clone(&self.config), name.clone())
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the TLS handshake with {} did not complete in time",
                    name.to_str()
                ));
            }
            let timeouts = tcp
                .set_read_timeout(Some(left))
                .and_then(|()| tcp.set_write_timeout(Some(left)));
            timeouts.map_err(|e| format!("cannot set a socket timeout: {e}"))?;
            match conn.complete_io(&mut tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "the TLS handshake with {} failed: {e}",
                        name.to_str()
                    ));
                }
            }
        }
        // Writes block as on a plain connection; reads get their deadline per read.
        tcp.set_write_timeout(None)
            .map_err(|e| format!("cannot clear the write timeout: {e}"))?;
        Ok(StreamOwned::new(conn, tcp))
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("receive", &self.receive)
            .field("broadcast", &self.broadcast)
            .finish_non_exhaustive()
    }
}

/// Two settings are equal when they verify the same names with the same configuration.
impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
            && self.receive == other.receive
            && self.broadcast == other.broadcast
    }
}

impl Eq for Tls {}

/// The name a certificate must be valid for: an IP address (brackets around IPv6 allowed) or
/// a DNS name.
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned())
        .map_err(|e| format!("`{host}` is not a host name or IP address to verify: {e}"))
}

/// The CA certificates of a PEM file, with errors naming it (the suite's and the bench's one
/// loader).
pub fn load_roots(ca_file: &Path) -> Result<RootCertStore, String> {
    let shown = ca_file.display();
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("{shown}: cannot read the CA file: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{shown}: not valid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{shown}: unusable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{shown}: no certificate in the CA file (expected \"-----BEGIN CERTIFICATE-----\")"
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn host_names_and_addresses_become_server_names() {
        assert!(matches!(
            server_name("localhost").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(server_name("not a host").is_err());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let missing = Tls::from_ca_file(Path::new("/nonexistent/ca.pem"), "a", "b").unwrap_err();
        assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
        let dir = std::env::temp_dir().join(format!("vtp-conf-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let err = Tls::from_ca_file(&empty, "a", "b").unwrap_err();
        assert!(err.contains("no certificate"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
