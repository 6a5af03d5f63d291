//! TLS for the generator (`--tls-ca`): subscribers and the `handshake` mode connect with
//! TLS 1.3 or 1.2, verifying the broker's certificate against the CA file for `--tls-name`.
//!
//! Every connection runs a full handshake (no session resumption: the client keeps no
//! session), with one key-exchange group (`--tls-group`, X25519 by default, what OpenSSL
//! clients such as stunnel and Python's `ssl` offer first), so that runs are comparable. The
//! provider is ring, as in vtp.

use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, NamedGroup};

/// A client configuration and the name it verifies.
#[derive(Debug, Clone)]
pub(crate) struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts the certificates in `ca_file` only, verifies `name`, and offers only `group`
    /// (`x25519`, `p256` or `p384`).
    pub(crate) fn new(ca_file: &Path, name: &str, group: &str) -> Result<Self, String> {
        let roots = vtp_conformance::load_roots(ca_file)?;
        let want = match group {
            "x25519" => NamedGroup::X25519,
            "p256" => NamedGroup::secp256r1,
            "p384" => NamedGroup::secp384r1,
            other => return Err(format!("--tls-group {other}: use x25519, p256 or p384")),
        };
        // rustls 0.23.48 deprecated ring's provider for lacking post-quantum key exchange; the
        // generator uses the provider vtp uses.
        #[allow(deprecated)]
        let mut provider: CryptoProvider = rustls::crypto::ring::default_provider();
        provider
            .kx_groups
            .retain(|g: &&'static dyn SupportedKxGroup| g.name() == want);
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        let name =
            ServerName::try_from(name.to_owned()).map_err(|e| format!("--tls-name {name}: {e}"))?;
        Ok(Self {
            config: Arc::new(config),
            name,
        })
    }

    /// A new client connection (handshake not started).
    pub(crate) fn connection(&self) -> Result<ClientConnection, String> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(|e| format!("TLS setup failed: {e}"))
    }
}
