//! TLS for outgoing pushes: rustls with the `ring` provider, trusting the operating system's CA
//! store, or only the PEM bundle named by `SSL_CERT_FILE` (`--push-ca-file`) when it is set, as
//! OpenSSL-based tools do. HTTP/2 is offered by ALPN (FCM speaks it), HTTP/1.1 otherwise.
use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA bundle {path}: {reason}")]
    Bundle { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client configuration for push deliveries.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca_file {
        Some(path) => bundle(path)?,
        None => native_roots(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; an unreadable file or one without certificates is an error
/// (a typo in `SSL_CERT_FILE` should stop the start, not every push).
fn bundle(path: &Path) -> Result<RootCertStore, TlsError> {
    let failed = |reason: String| TlsError::Bundle {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|err| failed(err.to_string()))? {
        let cert = cert.map_err(|err| failed(err.to_string()))?;
        roots
            .add(cert)
            .map_err(|err| failed(format!("not a usable CA certificate: {err}")))?;
    }
    if roots.is_empty() {
        return Err(failed("holds no certificate".into()));
    }
    log::info!(
        "push: trusting the {} CA certificate(s) in {}",
        roots.len(),
        path.display()
    );
    Ok(roots)
}

/// The operating system's store (`SSL_CERT_DIR` is honoured by rustls-native-certs). A machine
/// without one still starts: pushes then fail, and the log says why.
fn native_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        log::warn!("push: reading the system's CA certificates: {err}");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        log::warn!("push: no CA certificates found; pushes to https endpoints will fail");
    } else {
        log::debug!("push: {added} system CA certificates ({ignored} unusable)");
    }
    roots
}
