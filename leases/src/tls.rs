//! TLS for the control plane, optional: the lease manager (and the executor
//! managers' lookup services) serve TLS when given a certificate and key;
//! clients speak TLS when `RFX_TLS_CA` names the CA (PEM) to trust.
//! Everything else about the protocols is unchanged.
//!
//! | variable | side | meaning |
//! |---|---|---|
//! | `RFX_TLS_CERT`, `RFX_TLS_KEY` | lease manager, executor managers (lookup) | certificate chain and private key (PEM) |
//! | `RFX_TLS_CA` | clients (tenants, executor managers, operators) | CA certificates to trust (PEM): its presence turns TLS on |
//! | `RFX_TLS_SERVER_NAME` | clients | the name to verify (default: the IP address connected to) |

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::DaemonError;

/// The CA bundle clients trust (turns TLS on).
pub const TLS_CA_ENV: &str = "RFX_TLS_CA";
/// The lease manager's certificate chain.
pub const TLS_CERT_ENV: &str = "RFX_TLS_CERT";
/// The lease manager's private key.
pub const TLS_KEY_ENV: &str = "RFX_TLS_KEY";
/// The server name clients verify.
pub const TLS_SERVER_NAME_ENV: &str = "RFX_TLS_SERVER_NAME";

fn tls_err(what: &str, e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Tls(format!("{what}: {e}"))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, DaemonError> {
    std::fs::read(path).map_err(|e| tls_err(&format!("reading {}", path.display()), e))
}

/// A server's TLS settings (the lease manager's, a lookup service's).
#[derive(Clone)]
pub struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServer")
    }
}

impl TlsServer {
    /// From a PEM certificate chain and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsServer, DaemonError> {
        let certs = rustls_pemfile::certs(&mut read_pem(cert)?.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_err("parsing the certificate", e))?;
        if certs.is_empty() {
            return Err(DaemonError::Tls(format!(
                "no certificate in {}",
                cert.display()
            )));
        }
        let key = rustls_pemfile::private_key(&mut read_pem(key)?.as_slice())
            .map_err(|e| tls_err("parsing the private key", e))?
            .ok_or_else(|| DaemonError::Tls(format!("no private key in {}", key.display())))?;
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err("certificate and key", e))?;
        Ok(TlsServer {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        })
    }

    /// From `RFX_TLS_CERT` and `RFX_TLS_KEY`, if both are set.
    pub fn from_env() -> Result<Option<TlsServer>, DaemonError> {
        match (
            std::env::var_os(TLS_CERT_ENV),
            std::env::var_os(TLS_KEY_ENV),
        ) {
            (Some(c), Some(k)) => Self::from_pem_files(Path::new(&c), Path::new(&k)).map(Some),
            (None, None) => Ok(None),
            _ => Err(DaemonError::Tls(format!(
                "set both {TLS_CERT_ENV} and {TLS_KEY_ENV}, or neither"
            ))),
        }
    }

    /// Runs the server side of a TLS handshake on `tcp` (unbounded: the
    /// caller bounds it with a timeout).
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<Stream> {
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(
            self.acceptor.accept(tcp).await?,
        ))))
    }
}

/// The clients' TLS settings.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    connector: tokio_rustls::TlsConnector,
    name: Option<String>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .finish()
    }
}

impl TlsClient {
    /// Trusting the CA certificates of a PEM file; verifying `name` (else
    /// the IP address connected to).
    pub fn from_ca_file(ca: &Path, name: Option<String>) -> Result<TlsClient, DaemonError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut read_pem(ca)?.as_slice()) {
            let cert = cert.map_err(|e| tls_err("parsing the CA file", e))?;
            roots
                .add(cert)
                .map_err(|e| tls_err("adding a CA certificate", e))?;
        }
        if roots.is_empty() {
            return Err(DaemonError::Tls(format!(
                "no certificate in {}",
                ca.display()
            )));
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let config = Arc::new(cfg);
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(config.clone()),
            config,
            name,
        })
    }

    /// From `RFX_TLS_CA` (and `RFX_TLS_SERVER_NAME`), if set.
    pub fn from_env() -> Result<Option<TlsClient>, DaemonError> {
        match std::env::var_os(TLS_CA_ENV) {
            None => Ok(None),
            Some(ca) => Self::from_ca_file(Path::new(&ca), std::env::var(TLS_SERVER_NAME_ENV).ok())
                .map(Some),
        }
    }

    /// The name to verify for a server at `peer`.
    fn server_name(
        &self,
        peer: SocketAddr,
    ) -> Result<rustls::pki_types::ServerName<'static>, DaemonError> {
        Ok(match &self.name {
            Some(n) => rustls::pki_types::ServerName::try_from(n.clone())
                .map_err(|e| tls_err("server name", e))?,
            None => rustls::pki_types::ServerName::IpAddress(peer.ip().into()),
        })
    }

    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<Stream, DaemonError> {
        let name = self.server_name(peer)?;
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| tls_err("TLS handshake with the lease manager", e))?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
    }
}

impl TlsClient {
    /// The client side of a TLS handshake over a blocking socket connected
    /// to `peer`, run to completion before returning (bounded by the
    /// socket's read and write timeouts, which the caller sets).
    pub fn connect_blocking(
        &self,
        mut tcp: std::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<BlockingTlsStream, DaemonError> {
        let name = self.server_name(peer)?;
        let mut conn = rustls::ClientConnection::new(self.config.clone(), name)
            .map_err(|e| tls_err("TLS set-up", e))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .map_err(|e| tls_err(&format!("TLS handshake with {peer}"), e))?;
        }
        Ok(BlockingTlsStream(Box::new(rustls::StreamOwned::new(
            conn, tcp,
        ))))
    }
}

/// A TLS client connection over a blocking socket
/// ([`TlsClient::connect_blocking`]).
#[derive(Debug)]
pub struct BlockingTlsStream(
    Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>,
);

impl BlockingTlsStream {
    /// The socket (for timeouts).
    pub fn get_ref(&self) -> &std::net::TcpStream {
        self.0.get_ref()
    }
}

impl std::io::Read for BlockingTlsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Write for BlockingTlsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A control connection: plain TCP or TLS over it.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
