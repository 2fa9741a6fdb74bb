//! Serving HTTPS: the certificate chain and private key, read once at boot ([`load`]) into a
//! rustls configuration, and [`TlsListener`], a listener for `axum::serve` that completes each
//! TLS handshake on its own task.
//!
//! Invariants: a slow or failed handshake never holds up other connections (each is bounded by
//! [`HANDSHAKE_TIMEOUT`] and only finished handshakes are handed to the server); graceful
//! shutdown is `axum::serve`'s own, since the listener is just another `Listener`; the crypto
//! provider is rustls' `ring`, named explicitly rather than taken from a process default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Why HTTPS cannot be served with the given files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// Only one of the certificate and the key was given.
    #[error("{given} is set but {missing} is not: give both to serve HTTPS, or neither for plain HTTP")]
    Incomplete {
        /// The setting that was given.
        given: &'static str,
        /// The setting that is missing.
        missing: &'static str,
    },
    /// A file cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", .path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key.
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", .path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the pair (for example, the key does not match the certificate).
    #[error("the TLS certificate and key cannot be used together: {0}")]
    Rejected(rustls::Error),
}

/// The rustls configuration for `cert` and `key` (`--tls-cert`, `--tls-key`): `None` when
/// neither is given, an error when only one is or a file is unusable.
pub fn load(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Arc<rustls::ServerConfig>>, TlsConfigError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(TlsConfigError::Incomplete {
                given: "--tls-cert (FF_TLS_CERT)",
                missing: "--tls-key (FF_TLS_KEY)",
            });
        }
        (None, Some(_)) => {
            return Err(TlsConfigError::Incomplete {
                given: "--tls-key (FF_TLS_KEY)",
                missing: "--tls-cert (FF_TLS_CERT)",
            });
        }
        (Some(cert), Some(key)) => (cert, key),
    };
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsConfigError::Unreadable { path: path.to_path_buf(), source })
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsConfigError::NoCertificate { path: cert.to_path_buf() })?;
    if chain.is_empty() {
        return Err(TlsConfigError::NoCertificate { path: cert.to_path_buf() });
    }
    let key_der =
        PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|_| TlsConfigError::NoKey { path: key.to_path_buf() })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Rejected)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(TlsConfigError::Rejected)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// A TCP listener whose connections arrive with their TLS handshake done. Dropping it stops
/// accepting.
pub struct TlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `listener` and completes handshakes with `config`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let accepting = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(Self { local, accepted, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts TCP connections and hands each to its own handshake task.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                crate::answer_at_once(&accepted.0);
                accepted
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
