//! TLS between cluster nodes, optional: mutual TLS where both ends present a certificate signed
//! by the cluster's own CA, and each checks the other's against it. A connection without a
//! certificate from that CA never reaches the cookie handshake.
//!
//! Every node dials its peers under one name (`server_name`, default `switchyard-cluster`)
//! that the node certificates carry as a DNS SAN, whatever address it dials: pods come and go
//! with new addresses, the CA is what identifies the cluster. `deploy/cluster-certs.sh` makes
//! a CA and a node certificate of that shape.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The name peers dial under unless configured otherwise.
pub const DEFAULT_SERVER_NAME: &str = "switchyard-cluster";

/// Where the PEM files are, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that signs every node's certificate.
    pub ca: PathBuf,
    /// The DNS name every node certificate carries.
    pub server_name: String,
}

/// Why the TLS settings could not be loaded; each names the file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file (`cert`, `key`, `ca`).
        what: &'static str,
        /// Its path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The name is not a DNS name.
    #[error("server_name \"{0}\" is not a DNS name")]
    ServerName(String),
    /// rustls refused the combination (a key that does not match the certificate, say).
    #[error("{0}")]
    Config(String),
}

/// The loaded settings: an acceptor for the listener, a connector for dials.
#[derive(Clone)]
pub struct ClusterTls {
    /// Wraps accepted connections.
    pub acceptor: TlsAcceptor,
    /// Wraps dialled connections.
    pub connector: TlsConnector,
    /// The name dials verify.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

fn file_error(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File { what, path: path.display().to_string(), reason: reason.to_string() }
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(what, path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(what, path, error))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

impl ClusterTls {
    /// Reads the files and builds both ends (TLS 1.2 and 1.3, the `ring` provider).
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let chain = certificates("cert", &files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| file_error("key", &files.key, error))?;
        let mut roots = RootCertStore::empty();
        for ca in certificates("ca", &files.ca)? {
            roots.add(ca).map_err(|error| file_error("ca", &files.ca, error))?;
        }
        let roots = Arc::new(roots);
        let server_name = ServerName::try_from(files.server_name.clone()).map_err(|_| TlsError::ServerName(files.server_name.clone()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config_error = |error: rustls::Error| TlsError::Config(error.to_string());

        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()
            .map_err(|error| TlsError::Config(format!("client verifier: {error}")))?;
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|error| TlsError::Config(format!("cert {} and key {}: {error}", files.cert.display(), files.key.display())))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|error| TlsError::Config(format!("cert {} and key {}: {error}", files.cert.display(), files.key.display())))?;
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(server)), connector: TlsConnector::from(Arc::new(client)), server_name })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles { cert: dir.join("node.pem"), key: dir.join("node-key.pem"), ca: dir.join("ca.pem"), server_name: DEFAULT_SERVER_NAME.into() }
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = std::env::temp_dir().join(format!("switchyard-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let error = ClusterTls::load(&files(&dir)).unwrap_err().to_string();
        assert!(error.starts_with("cert ") && error.contains("node.pem"), "{error}");
        std::fs::write(dir.join("node.pem"), "not pem").unwrap();
        let error = ClusterTls::load(&files(&dir)).unwrap_err().to_string();
        assert!(error.contains("holds no PEM certificate"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
