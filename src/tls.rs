//! TLS for both connections, with libpq's `sslmode` semantics, over rustls.
//!
//! | sslmode       | TLS                        | certificate checked                        |
//! |---------------|----------------------------|--------------------------------------------|
//! | `disable`     | never                      | -                                          |
//! | `prefer`      | if the server offers it    | no                                         |
//! | `require`     | always                     | no (as `verify-ca` when a root file exists) |
//! | `verify-ca`   | always                     | chain to `sslrootcert`                     |
//! | `verify-full` | always                     | chain, and the certificate names the host  |
//!
//! `sslrootcert` names a PEM file of trusted roots (default `~/.postgresql/root.crt`, as
//! libpq), or `system` for the operating system's store. Both DSN parameters are taken out of
//! the DSN before tokio-postgres sees it ([`split_dsn`]); tokio-postgres then only learns
//! whether TLS is off, optional or required, and the handshake itself is done here for the
//! blue connections ([`MakeTls`]) and for green's replication connection ([`Tls::negotiate`]).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::error::{Error, Result};

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres needs to know: whether to ask, and whether a refusal is fatal.
    pub fn for_tokio_postgres(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// The parameters of a DSN that pgbridge handles itself rather than tokio-postgres: TLS, and
/// `target_session_attrs` (pgbridge always connects to the primary among the hosts).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DsnTls {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub target_session_attrs: Option<String>,
}

/// Takes `sslmode`, `sslrootcert` and `target_session_attrs` out of a DSN (URL or key=value
/// form); returns the rest.
pub fn split_dsn(dsn: &str) -> (String, DsnTls) {
    let trimmed = dsn.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        split_url(trimmed)
    } else {
        split_pairs(trimmed)
    }
}

/// The URL form: TLS parameters are taken out of the query string.
fn split_url(url: &str) -> (String, DsnTls) {
    let mut found = DsnTls::default();
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), found);
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Keys are percent-decoded too (tokio-postgres decodes them): `ssl%6Dode` is sslmode.
        match percent_decode(key).as_str() {
            "sslmode" => found.sslmode = Some(percent_decode(value)),
            "sslrootcert" => found.sslrootcert = Some(percent_decode(value)),
            "target_session_attrs" => found.target_session_attrs = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, found)
}

/// The key=value form; values may be single-quoted with backslash escapes.
fn split_pairs(dsn: &str) -> (String, DsnTls) {
    let mut found = DsnTls::default();
    let mut rest = String::new();
    let mut cursor = Cursor {
        chars: dsn.chars().collect(),
        at: 0,
    };
    while !cursor.done() {
        cursor.skip_whitespace();
        let start = cursor.at;
        let key = cursor.take_while(|c| c != '=' && !c.is_whitespace());
        cursor.skip_whitespace();
        if cursor.peek() != Some('=') {
            // Not a pair: leave it for tokio-postgres to report.
            rest.push_str(&cursor.since(start));
            rest.push(' ');
            continue;
        }
        cursor.at += 1;
        cursor.skip_whitespace();
        let value_start = cursor.at;
        let (value, closed) = cursor.value();
        let raw = cursor.since(value_start);
        match key.as_str() {
            // An unclosed quote is left for tokio-postgres to refuse, as libpq does.
            "sslmode" if closed => found.sslmode = Some(value),
            "sslrootcert" if closed => found.sslrootcert = Some(value),
            "target_session_attrs" if closed => found.target_session_attrs = Some(value),
            _ => rest.push_str(&format!("{key}={raw} ")),
        }
    }
    (rest.trim_end().to_string(), found)
}

/// A position in a key=value DSN.
struct Cursor {
    chars: Vec<char>,
    at: usize,
}

impl Cursor {
    fn done(&self) -> bool {
        self.at >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        self.take_while(char::is_whitespace);
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let start = self.at;
        while self.peek().is_some_and(&keep) {
            self.at += 1;
        }
        self.since(start)
    }

    /// The text from `start` to here (or the end).
    fn since(&self, start: usize) -> String {
        self.chars[start..self.at.min(self.chars.len())].iter().collect()
    }

    /// A value, quoted or bare, with backslash escapes resolved; and whether a quote that
    /// opened it was closed.
    fn value(&mut self) -> (String, bool) {
        let mut value = String::new();
        let quoted = self.peek() == Some('\'');
        if quoted {
            self.at += 1;
        }
        while let Some(c) = self.peek() {
            if (quoted && c == '\'') || (!quoted && c.is_whitespace()) {
                break;
            }
            if c == '\\' && self.at + 1 < self.chars.len() {
                self.at += 1;
            }
            value.push(self.chars[self.at]);
            self.at += 1;
        }
        let closed = !quoted || self.peek() == Some('\'');
        if quoted {
            // Past the closing quote (or the end, when it is missing).
            self.at += 1;
        }
        (value, closed)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let (h, l) = (bytes[i + 1], bytes[i + 2]);
            if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII hex digits");
                let b = u8::from_str_radix(hex, 16).expect("two hex digits");
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One side's TLS settings, ready to connect.
#[derive(Clone)]
pub struct Tls {
    pub mode: SslMode,
    /// Where the trusted roots came from, for messages ("/etc/pgbridge/root.crt", "system").
    pub roots: Option<String>,
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({}, roots: {:?})", self.mode.as_str(), self.roots)
    }
}

impl Tls {
    pub fn disabled() -> Tls {
        Tls {
            mode: SslMode::Disable,
            roots: None,
            config: None,
        }
    }

    /// Builds the settings for `side` from the DSN's parameters; `file` is the config file,
    /// named in errors.
    pub fn from_dsn(side: &str, found: &DsnTls, file: &Path) -> Result<Tls> {
        let key = |k: &str| format!("{}: {side}.dsn {k}", file.display());
        let mode = match found.sslmode.as_deref() {
            None => None,
            Some(v) => Some(SslMode::parse(v).ok_or_else(|| {
                // Quote the value only when it looks like a mode: in a mangled DSN
                // ("sslmode= password=..."), the value is the rest of the string.
                let shown = if v.len() <= 16 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    format!("={v} is not a valid sslmode")
                } else {
                    " has a value that is not an sslmode".into()
                };
                Error::definite(format!(
                    "{}{shown}; use disable, prefer, require, verify-ca or verify-full",
                    key("sslmode")
                ))
            })?),
        };
        if found.sslrootcert.as_deref().is_some_and(|p| p.contains('=')) {
            return Err(Error::definite(format!(
                "{} has a value with = in it, not a file name; quote a path with spaces: sslrootcert='/a b/root.crt'",
                key("sslrootcert")
            )));
        }
        // `sslrootcert=system` defaults to verify-full, as in libpq 16.
        let system = found.sslrootcert.as_deref() == Some("system");
        let mode = mode.unwrap_or(if system { SslMode::VerifyFull } else { SslMode::Prefer });
        if mode == SslMode::Disable {
            return Ok(Tls::disabled());
        }
        let explicit = found.sslrootcert.as_deref().map(PathBuf::from);
        let default = std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt"));
        let roots: Option<(RootCertStore, String)> = if system {
            Some((system_roots(&key("sslrootcert"))?, "system".into()))
        } else {
            match (&explicit, &default) {
                (Some(p), _) => Some((read_roots(p, &key("sslrootcert"))?, p.display().to_string())),
                (None, Some(p)) if p.exists() => Some((read_roots(p, &key("sslrootcert"))?, p.display().to_string())),
                _ => None,
            }
        };
        if mode == SslMode::Prefer && explicit.is_none() && !system {
            // libpq does not check certificates under prefer; nor do we.
            return Ok(Tls::unverified(mode));
        }
        let (store, source) = match roots {
            Some(r) => r,
            None if mode == SslMode::Require => return Ok(Tls::unverified(mode)),
            None => {
                return Err(Error::definite(format!(
                    "{}: sslmode={} checks the server's certificate, but no root certificate was given and {} does \
                     not exist; add sslrootcert=/path/to/root.crt (or sslrootcert=system) to the dsn",
                    key("sslmode"),
                    mode.as_str(),
                    default.map_or("~/.postgresql/root.crt".into(), |p| p.display().to_string())
                )))
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .build()
            .map_err(|e| Error::definite(format!("{}: cannot use these roots: {e}", key("sslrootcert"))))?;
        // With a root file, require behaves as verify-ca (libpq does the same).
        let check_name = mode == SslMode::VerifyFull;
        let verifier = Arc::new(Verified { webpki, check_name });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::definite(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Tls {
            mode,
            roots: Some(source),
            config: Some(Arc::new(config)),
        })
    }

    fn unverified(mode: SslMode) -> Tls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Unverified {
            algorithms: provider.signature_verification_algorithms,
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Tls {
            mode,
            roots: None,
            config: Some(Arc::new(config)),
        }
    }

    /// The TLS handshake on an open socket; `host` is the name the certificate must carry
    /// under verify-full.
    pub async fn handshake<S>(&self, stream: S, host: &str) -> Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.config.clone().expect("handshake only with TLS on");
        let name = server_name(host);
        tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| self.handshake_error(&e, host))
    }

    fn handshake_error(&self, e: &io::Error, host: &str) -> Error {
        let text = e.to_string();
        let fix = if text.contains("NotValidForName") || text.contains("not valid for name") {
            format!(
                "; sslmode=verify-full needs a certificate issued for {host}: connect by the name on the certificate, \
                 or use sslmode=verify-ca"
            )
        } else if text.contains("UnknownIssuer") || text.contains("unknown issuer") || text.contains("BadSignature") {
            format!(
                "; the server's certificate does not chain to the roots in {}: give the CA that signed it in sslrootcert",
                self.roots.as_deref().unwrap_or("sslrootcert")
            )
        } else {
            String::new()
        };
        let message = format!("TLS handshake failed (sslmode={}): {text}{fix}", self.mode.as_str());
        // A server that restarts or fails over cuts the handshake: that heals by reconnecting.
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::TimedOut => Error::transient(message),
            _ => Error::definite(message),
        }
    }

    /// Advice when a server without TLS refuses what `side`'s sslmode demands.
    pub fn refused_hint(&self, side: &str) -> String {
        format!(
            "the server has ssl = off, but {side}.dsn asks for sslmode={}; turn ssl on there or lower sslmode",
            self.mode.as_str()
        )
    }

    /// For green's replication connection: asks for TLS on a fresh socket (SSLRequest) and
    /// performs the handshake, or goes on in plain text when the server declines and the mode
    /// allows it. `Ok(true)`: do the handshake now; `Ok(false)`: go on in plain text. `side`
    /// ("green", "blue") names the DSN in advice.
    pub async fn negotiate<S>(&self, stream: &mut S, what: &str, side: &str) -> Result<bool>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.mode == SslMode::Disable {
            return Ok(false);
        }
        // SSLRequest: length 8, code 80877103.
        let request = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        let io_err = |e: io::Error| Error::transient(format!("asking {what} for TLS: {e}"));
        stream.write_all(&request).await.map_err(io_err)?;
        stream.flush().await.map_err(io_err)?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await.map_err(io_err)?;
        match answer[0] {
            b'S' => Ok(true),
            b'N' if self.mode == SslMode::Prefer => Ok(false),
            b'N' => Err(
                Error::definite(format!("cannot connect to {what}: the server does not support TLS"))
                    .hint(self.refused_hint(side)),
            ),
            other => Err(Error::definite(format!(
                "{what} answered the TLS request with {:?}, not S or N; is this a PostgreSQL server?",
                other as char
            ))),
        }
    }
}

fn server_name(host: &str) -> ServerName<'static> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string())
            .unwrap_or_else(|_| ServerName::IpAddress(std::net::IpAddr::from([0, 0, 0, 0]).into())),
    }
}

fn read_roots(path: &Path, key: &str) -> Result<RootCertStore> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<std::result::Result<_, _>>())
        .map_err(|e| {
            Error::definite(format!(
                "{key}={}: cannot read PEM certificates: {e}; point sslrootcert at the CA certificate file",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::definite(format!(
            "{key}={}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert).map_err(|e| {
            Error::definite(format!(
                "{key}={}: a certificate cannot be used as a root: {e}",
                path.display()
            ))
        })?;
    }
    Ok(store)
}

fn system_roots(key: &str) -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(Error::definite(format!(
            "{key}=system: the operating system's certificate store is empty or unreadable; install ca-certificates \
             or give a file"
        )));
    }
    Ok(store)
}

/// The chain is checked against the roots; the host name only under verify-full.
#[derive(Debug)]
struct Verified {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }))
                if !self.check_name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `prefer` and `require` without roots: encryption without identity, as libpq. The
/// handshake signatures are still checked, so the session key belongs to the certificate shown.
#[derive(Debug)]
struct Unverified {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// tokio-postgres' TLS hook for the blue (and ordinary green) connections.
#[derive(Clone)]
pub struct MakeTls {
    tls: Tls,
}

impl MakeTls {
    pub fn new(tls: &Tls) -> MakeTls {
        MakeTls { tls: tls.clone() }
    }
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for MakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        Ok(Connect {
            tls: self.tls.clone(),
            host: domain.to_string(),
        })
    }
}

pub struct Connect {
    tls: Tls,
    host: String,
}

impl<S> tokio_postgres::tls::TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<TlsStream<S>, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let s = self
                .tls
                .handshake(stream, &self.host)
                .await
                .map_err(|e| -> Self::Error {
                    // tokio-postgres takes an I/O error for trouble that heals by reconnecting
                    // (see `Error::postgres`); a certificate problem is not an I/O error.
                    let text = e.message().to_string();
                    if e.is_transient() {
                        Box::new(io::Error::other(text))
                    } else {
                        text.into()
                    }
                })?;
            Ok(TlsStream(Box::new(s)))
        })
    }
}

/// A TLS stream as tokio-postgres wants it.
pub struct TlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_are_taken_out() {
        let (rest, tls) =
            split_dsn("postgres://u:p@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem");
        assert_eq!(rest, "postgres://u:p@h:5432/db?application_name=x");
        assert_eq!(tls.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(tls.sslrootcert.as_deref(), Some("/tmp/ca.pem"));
        let (rest, tls) = split_dsn("postgres://h/db?sslmode=require");
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(tls.sslmode.as_deref(), Some("require"));
        let (rest, tls) = split_dsn("postgres://h/db");
        assert_eq!((rest.as_str(), tls), ("postgres://h/db", DsnTls::default()));
    }

    #[test]
    fn encoded_keys_unclosed_quotes_and_signs_are_not_slipped_past() {
        // tokio-postgres decodes keys: an encoded sslmode must not bypass the TLS settings.
        let (rest, tls) = split_dsn("postgres://h/db?ssl%6Dode=verify-full");
        assert_eq!(
            (rest.as_str(), tls.sslmode.as_deref()),
            ("postgres://h/db", Some("verify-full"))
        );
        // An unclosed quote stays in the DSN for tokio-postgres to refuse.
        let (rest, tls) = split_dsn("host=h sslmode='require");
        assert_eq!(tls.sslmode, None);
        assert!(rest.contains("sslmode='require"), "{rest}");
        assert_eq!(percent_decode("a%+fb%4"), "a%+fb%4");
        assert_eq!(percent_decode("%2Ftmp"), "/tmp");
    }

    #[test]
    fn key_value_parameters_are_taken_out() {
        let (rest, tls) = split_dsn("host=h sslmode = verify-ca password='a b\\'c' sslrootcert='/x y/ca.pem' dbname=d");
        assert_eq!(rest, "host=h password='a b\\'c' dbname=d");
        assert_eq!(tls.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(tls.sslrootcert.as_deref(), Some("/x y/ca.pem"));
    }

    #[test]
    fn modes_parse_like_libpq() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Prefer),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(SslMode::parse(text), Some(mode));
        }
        assert_eq!(SslMode::parse("on"), None);
        let err = Tls::from_dsn(
            "green",
            &DsnTls {
                sslmode: Some("verify-full".into()),
                sslrootcert: Some("/nonexistent/ca.pem".into()),
                target_session_attrs: None,
            },
            Path::new("pgbridge.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pgbridge.toml: green.dsn sslrootcert=/nonexistent/ca.pem"),
            "{err}"
        );
    }
}
