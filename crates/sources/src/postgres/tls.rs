//! TLS for PostgreSQL models: `sslmode` and `sslrootcert` as libpq reads them, served by
//! rustls.
//!
//! The client library knows only `sslmode=disable|prefer|require` and no `sslrootcert`, so both
//! are taken out of the `url` here ([`split_tls_options`]), and the library is handed the mode
//! it knows and a rustls configuration that checks what the mode asks for ([`client_config`]).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// `sslmode`, as libpq reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsMode {
    /// No TLS.
    Disable,
    /// Without TLS first; with TLS (unverified) when the server refuses that.
    Allow,
    /// With TLS (unverified) when the server offers it, else without. libpq's default.
    Prefer,
    /// TLS, the certificate not verified (verified as by `VerifyCa` when `sslrootcert` is set).
    Require,
    /// TLS, the certificate signed by a trusted CA; any host name.
    VerifyCa,
    /// TLS, the certificate signed by a trusted CA and issued for the host connected to.
    VerifyFull,
}

/// The `sslmode` values, as messages list them.
pub(super) const TLS_MODES: &str = "disable, allow, prefer, require, verify-ca or verify-full";

impl TlsMode {
    pub(super) fn parse(value: &str) -> Option<TlsMode> {
        Some(match value {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the connection fails rather than go without TLS.
    pub(super) fn requires_tls(self) -> bool {
        matches!(
            self,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull
        )
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS options of a `url`, as written (the last one wins when a key is given twice).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TlsOptions {
    pub(super) sslmode: Option<String>,
    pub(super) sslrootcert: Option<String>,
}

/// The `url` without its `sslmode` and `sslrootcert`, and those two.
///
/// Handles URLs (`postgres://host/db?sslmode=verify-full&sslrootcert=/ca.pem`, values
/// percent-decoded) and libpq `key=value` strings (values quoted or not). A `key=value`
/// string that cannot be read is returned as it is, for the client library to refuse.
pub(super) fn split_tls_options(url: &str) -> (String, TlsOptions) {
    let lower = url.trim_start().to_ascii_lowercase();
    let is_url = ["postgres://", "postgresql://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme));
    if is_url {
        split_uri(url)
    } else {
        split_conninfo(url).unwrap_or_else(|| (url.to_owned(), TlsOptions::default()))
    }
}

/// Records `key=value` when the key is a TLS option; whether it was one.
fn take(options: &mut TlsOptions, key: &str, value: String) -> bool {
    if key == "sslmode" {
        options.sslmode = Some(value);
    } else if key == "sslrootcert" {
        options.sslrootcert = Some(value);
    } else {
        return false;
    }
    true
}

fn split_uri(url: &str) -> (String, TlsOptions) {
    let mut options = TlsOptions::default();
    // The query string starts at the first `?` after the credentials (a `?` in a password is
    // written %3F).
    let from = url.find('@').unwrap_or(0);
    let Some(q) = url.get(from..).and_then(|r| r.find('?')).map(|q| from + q) else {
        return (url.to_owned(), options);
    };
    let (base, params) = (
        url.get(..q).unwrap_or_default(),
        url.get(q + 1..).unwrap_or_default(),
    );
    let kept: Vec<&str> = params
        .split('&')
        .filter(|param| match param.split_once('=') {
            Some((key, value)) => !take(&mut options, key, percent_decode(value)),
            None => true,
        })
        .collect();
    let mut rest = base.to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    (rest, options)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split_conninfo(s: &str) -> Option<(String, TlsOptions)> {
    let mut options = TlsOptions::default();
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let trimmed = rest.trim_start();
        let ws = rest.get(..rest.len() - trimmed.len()).unwrap_or_default();
        rest = trimmed;
        if rest.is_empty() {
            out.push_str(ws);
            return Some((out, options));
        }
        let key_len = rest
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(rest.len());
        let key = rest.get(..key_len).unwrap_or_default();
        let after_eq = rest
            .get(key_len..)
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix('='))?
            .trim_start();
        let value_len = super::conninfo_value_len(after_eq)?;
        let value = after_eq.get(..value_len).unwrap_or_default();
        let pair_len = rest.len() - after_eq.len() + value_len;
        if !take(&mut options, key, unquote(value)) {
            out.push_str(ws);
            out.push_str(rest.get(..pair_len).unwrap_or_default());
        }
        rest = rest.get(pair_len..).unwrap_or_default();
    }
}

/// A `key=value` value as libpq reads it: quotes removed, backslash escapes resolved.
fn unquote(value: &str) -> String {
    let inner = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verify {
    /// Not at all: the connection is encrypted, but the server could be anyone.
    Nothing,
    /// Signed by a trusted CA.
    Ca,
    /// Signed by a trusted CA and issued for the host name.
    Full,
}

/// The rustls configuration for `verify`, trusting the CA certificates of the PEM file `roots`
/// (or, without one, the Mozilla roots bundled with attentive-sync). Fails with what is wrong
/// with the file.
pub(super) fn client_config(verify: Verify, roots: Option<&Path>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS cannot be set up: {e}"))?;
    let config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
        Verify::Ca | Verify::Full => {
            let store = Arc::new(root_store(roots)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(store, provider)
                .build()
                .map_err(|e| format!("TLS cannot be set up: {e}"))?;
            if verify == Verify::Full {
                builder.with_webpki_verifier(webpki)
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoHostName(webpki)))
            }
        }
    };
    Ok(config.with_no_client_auth())
}

fn root_store(roots: Option<&Path>) -> Result<RootCertStore, String> {
    let Some(path) = roots else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            let why = match e {
                rustls::pki_types::pem::Error::Io(io) => io.to_string(),
                other => format!("it is not a PEM file: {other}"),
            };
            format!(
                "`sslrootcert={shown}` in the PostgreSQL `url` cannot be read ({why}); give \
                 the absolute path of a PEM file holding the CA certificate(s) that signed \
                 the server's certificate"
            )
        })?;
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        let why = if ignored > 0 {
            "its certificates cannot be parsed"
        } else {
            "it holds no -----BEGIN CERTIFICATE----- block"
        };
        return Err(format!(
            "`sslrootcert={shown}` in the PostgreSQL `url` holds no usable CA certificate \
             ({why}); give the absolute path of a PEM file holding the CA certificate(s) that \
             signed the server's certificate"
        ));
    }
    Ok(store)
}

/// `sslmode=require` (and `prefer`, `allow`) without a root certificate: any certificate is
/// taken, but the handshake is still checked against it (the connection is encrypted to
/// whoever holds its key).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the certificate chain is verified, the host name is not.
///
/// rustls verifies the chain before the name, so a certificate refused only for its name has
/// a trusted chain.
#[derive(Debug)]
struct NoHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NoHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Why the server's certificate was refused, in words, or `None` when `e` is not about the
/// certificate. `roots` names where the trusted CAs came from.
pub(super) fn certificate_problem(e: &rustls::Error, host: &str, roots: &str) -> Option<String> {
    let rustls::Error::InvalidCertificate(problem) = e else {
        return None;
    };
    Some(match problem {
        CertificateError::UnknownIssuer => format!(
            "its certificate is not signed by a trusted CA (trusted: {roots}); set \
             sslrootcert to the PEM file of the CA that signed it"
        ),
        CertificateError::NotValidForName => format!(
            "its certificate is not issued for the host name `{host}`; sslmode=verify-full \
             checks that the certificate names the host in `url`: connect with a name it \
             holds, or use sslmode=verify-ca"
        ),
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "its certificate is not issued for the host name `{host}` (it names {}); \
             sslmode=verify-full checks that the certificate names the host in `url`: \
             connect with a name it holds, or use sslmode=verify-ca",
            if presented.is_empty() {
                "no host".to_owned()
            } else {
                presented
                    .iter()
                    .map(|n| bare_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "its certificate has expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "its certificate is not valid yet (is this machine's clock right?)".to_owned()
        }
        other => format!("its certificate is refused ({other:?})"),
    })
}

/// A name of a certificate as rustls shows it (`DnsName("localhost")`, `IpAddress(127.0.0.1)`),
/// without the wrapping.
fn bare_name(shown: &str) -> &str {
    ["DnsName(\"", "IpAddress(", "URI(\""]
        .iter()
        .find_map(|prefix| shown.strip_prefix(prefix))
        .map_or(shown, |inner| {
            inner.trim_end_matches(')').trim_end_matches('"')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, Option<&'static str>, Option<String>) {
        let (rest, options) = split_tls_options(url);
        let mode = options
            .sslmode
            .map(|m| TlsMode::parse(&m).map_or("?", TlsMode::as_str));
        (rest, mode, options.sslrootcert)
    }

    #[test]
    fn tls_options_come_out_of_urls() {
        assert_eq!(
            split("postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem"),
            (
                "postgres://u:p@h:5432/db".to_owned(),
                Some("verify-full"),
                Some("/etc/ca x.pem".to_owned())
            )
        );
        assert_eq!(
            split("postgresql://h/db?connect_timeout=5&sslmode=require&application_name=a"),
            (
                "postgresql://h/db?connect_timeout=5&application_name=a".to_owned(),
                Some("require"),
                None
            )
        );
        assert_eq!(
            split("postgres://h/db?sslmode=disable&sslmode=verify-ca"),
            ("postgres://h/db".to_owned(), Some("verify-ca"), None)
        );
        assert_eq!(
            split("postgres://h/db"),
            ("postgres://h/db".to_owned(), None, None)
        );
    }

    #[test]
    fn tls_options_come_out_of_key_value_strings() {
        assert_eq!(
            split("host=h sslmode=verify-ca  user=u sslrootcert='/a b/c\\'s.pem' dbname=d"),
            (
                "host=h  user=u dbname=d".to_owned(),
                Some("verify-ca"),
                Some("/a b/c's.pem".to_owned())
            )
        );
        assert_eq!(
            split("sslmode = require host=h"),
            (" host=h".to_owned(), Some("require"), None)
        );
        // Unreadable: left for the client library to refuse.
        assert_eq!(
            split("host=h sslmode"),
            ("host=h sslmode".to_owned(), None, None)
        );
    }

    #[test]
    fn certificate_names_are_shown_bare() {
        assert_eq!(bare_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(bare_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(bare_name("something else"), "something else");
    }

    #[test]
    fn tls_modes_read_as_libpq_spells_them() {
        for mode in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            assert_eq!(TlsMode::parse(mode).map(TlsMode::as_str), Some(mode));
        }
        assert_eq!(TlsMode::parse("verify_full"), None);
        assert_eq!(TlsMode::parse("Require"), None);
    }
}
