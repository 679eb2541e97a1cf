//! TLS towards trunks: the connector this node opens `tls` connections to providers with.
//!
//! The provider's certificate is verified against the system's trust roots (read once at
//! start, as rustls-native-certs finds them) plus the operator's own CA file
//! (`sip.tls_trunk_ca`: a private carrier CA, or a lab's), for the name the trunk's address
//! or its SRV target gives. A node that must prove itself to a provider (mutual TLS)
//! presents `sip.tls_client_cert`, reloaded when its files change like the server's.

use super::tls::{add_ca_file, ReloadingCert, TlsSetupError, RELOAD_CHECK};
use std::path::Path;
use std::sync::Arc;

/// Where the connector's trust and identity come from.
#[derive(Debug, Default, Clone)]
pub struct TlsClientFiles<'a> {
    /// Extra CA certificates (PEM) trusted beside the system's.
    pub extra_ca: Option<&'a Path>,
    /// Certificate chain and key (PEM) to present when the provider asks for one.
    pub identity: Option<(&'a Path, &'a Path)>,
}

/// A connector for TLS trunks.
pub fn tls_connector(
    files: TlsClientFiles<'_>,
) -> Result<tokio_rustls::TlsConnector, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "a system trust root could not be read");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system trust roots for TLS trunks");
    if let Some(ca) = files.extra_ca {
        add_ca_file(&mut roots, ca)?;
    }
    // The provider is named, as for the server side: rustls refuses to guess between two.
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsSetupError::Invalid(e.to_string()))?
    .with_root_certificates(roots);
    let config = match files.identity {
        Some((cert, key)) => builder.with_client_cert_resolver(Arc::new(ReloadingCert::load(
            cert,
            key,
            RELOAD_CHECK,
        )?)),
        None => builder.with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
