//! TLS with rustls (ring): the server configuration from PEM files (SimpleHTTP's SSLKEYCERT and
//! SSLINTERMEDIATECACERT), ALPN for HTTP/2 and HTTP/1.1, and the handshake of one connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::transport::{Io, PlainStream};

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A certificate file (the certificate or the intermediate CA) holds none.
    #[error("{0}: no certificate in the file")]
    NoCertificate(PathBuf),
    /// rustls refused the key or certificates.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the key and certificates are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key: PathBuf,
    /// The certificate, optionally followed by its chain (PEM).
    pub cert: PathBuf,
    /// Intermediate CA certificates sent after the chain (PEM), as SimpleHTTP's
    /// SSLINTERMEDIATECACERT.
    pub intermediate_ca: Option<PathBuf>,
}

/// A loaded TLS configuration, shared by every worker (loaded once, in the parent).
#[derive(Clone)]
pub struct TlsSettings {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings").field("alpn", &self.acceptor.config().alpn_protocols).finish()
    }
}

impl TlsSettings {
    /// Loads the files; `http2` offers `h2` in ALPN before `http/1.1`.
    pub fn load(files: &TlsFiles, http2: bool) -> Result<TlsSettings, TlsError> {
        let mut chain = certificates(&files.cert)?;
        if let Some(intermediate) = &files.intermediate_ca {
            chain.extend(certificates(intermediate)?);
        }
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error(&files.key, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols =
            if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
        Ok(TlsSettings { acceptor: TlsAcceptor::from(Arc::new(config)) })
    }

    /// Performs the handshake, bounded by `timeout`: a client that never finishes it costs
    /// this one connection, nothing more.
    pub(crate) async fn accept(&self, stream: PlainStream, timeout: Duration) -> std::io::Result<Io> {
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Ok(Io::Tls(Box::new(tls))),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")),
        }
    }
}

/// What the TLS connection negotiated: (cipher suite name, HTTP/2 chosen by ALPN).
pub(crate) fn negotiated(io: &Io) -> Option<(String, bool)> {
    let Io::Tls(tls) = io else { return None };
    let connection = tls.get_ref().1;
    let cipher = connection.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default();
    Some((cipher, connection.alpn_protocol() == Some(b"h2")))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(chain)
}

fn pem_error(path: &Path, error: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem { path: path.to_path_buf(), message: error.to_string() }
}
