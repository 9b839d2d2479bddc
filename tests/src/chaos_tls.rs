//! TLS for the chaos harness: a throwaway CA and server certificate, made with the `openssl`
//! command (as `tests/tests/sidecar_cli.rs` does; `Err` says why not, for a SKIP line), and
//! client connections that are plain TCP or rustls over TCP, for the harness's raw HTTP/2
//! and grpc-web clients (tonic clients use tonic's own TLS).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The server certificate's name (its SAN also holds 127.0.0.1).
pub const SERVER_NAME: &str = "localhost";

/// Files of a test CA and a server certificate it signed.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// CA certificate (PEM): what clients trust.
    pub ca: PathBuf,
    /// Server certificate chain (PEM), for `--tls-cert`.
    pub cert: PathBuf,
    /// Server key (PEM), for `--tls-key`.
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Makes a CA and a server certificate for `localhost` / 127.0.0.1 in `dir`.
pub fn make_certs(dir: &Path) -> Result<TestCerts, String> {
    std::fs::write(
        dir.join("srv.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .map_err(|e| format!("cannot write srv.ext: {e}"))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ringside-chaos-ca",
    ]);
    openssl(dir, &ca)?;
    let mut srv = vec!["req"];
    srv.extend(ec);
    srv.extend([
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &srv)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "srv.ext",
        ],
    )?;
    Ok(TestCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("srv.pem"),
        key: dir.join("srv.key"),
    })
}

/// A rustls client configuration trusting `ca`, offering the ALPN protocols `alpn`
/// (`h2` for HTTP/2, `http/1.1` for grpc-web).
pub fn client_config(ca: &Path, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client connection: plain TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// rustls over TCP (the handshake runs on the first read or write).
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    /// Connects to `addr` within `timeout`, over TLS when `tls` is given.
    pub fn connect(
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<&Arc<ClientConfig>>,
    ) -> io::Result<Conn> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Conn::Plain(tcp)),
            Some(config) => {
                let name = ServerName::try_from(SERVER_NAME)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let conn =
                    ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
                Ok(Conn::Tls(Box::new(StreamOwned::new(conn, tcp))))
            }
        }
    }

    /// The TCP socket underneath (addresses, timeouts).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }

    /// True over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}
