//! `serve --tls-cert FILE --tls-key FILE`: the server's own TLS (rustls, ring), and the `Host`
//! check of `--allowed-hosts`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The acceptor for `files`: TLS 1.2 and 1.3, HTTP/1.1 over ALPN. Every problem names the
/// file and what is wrong with it.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, Error> {
    let bad = |path: &Path, reason: String| Error::Tls {
        path: path.to_owned(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(
            &files.cert,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        bad(
            &files.key,
            format!("holds no readable PEM private key ({e})"),
        )
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            bad(
                &files.key,
                format!(
                    "does not go with the certificate {}: {e}",
                    files.cert.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Whether a request's `Host` (without its port) is one of `allowed` (case-insensitive;
/// `*.example.com` matches its subdomains). An empty list allows every host.
pub fn host_allowed(allowed: &[String], host: Option<&str>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(host) = host else { return false };
    let name = match host.strip_prefix('[') {
        // [::1]:8080
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    }
    .trim_end_matches('.')
    .to_ascii_lowercase();
    allowed.iter().any(|a| {
        let a = a.trim_end_matches('.').to_ascii_lowercase();
        match a.strip_prefix("*.") {
            Some(domain) => name.ends_with(&format!(".{domain}")),
            None => name == a,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn hosts_are_matched_without_their_port_and_case() {
        let allowed = vec![
            "sync.example.com".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        assert!(host_allowed(&allowed, Some("sync.example.com")));
        assert!(host_allowed(&allowed, Some("Sync.Example.COM:8443")));
        assert!(host_allowed(&allowed, Some("127.0.0.1:8080")));
        assert!(host_allowed(&allowed, Some("[::1]:8080")));
        assert!(host_allowed(&allowed, Some("sync.example.com.")));
        assert!(!host_allowed(&allowed, Some("evil.example")));
        assert!(!host_allowed(
            &allowed,
            Some("sync.example.com.evil.example")
        ));
        assert!(!host_allowed(&allowed, Some("localhost:8080")));
        assert!(!host_allowed(&allowed, None));
        assert!(host_allowed(&[], None), "no list: every host");
        let wild = vec!["*.example.com".to_owned()];
        assert!(host_allowed(&wild, Some("a.example.com")));
        assert!(host_allowed(&wild, Some("a.b.example.com:1")));
        assert!(!host_allowed(&wild, Some("example.com")));
        assert!(!host_allowed(&wild, Some("badexample.com")));
    }
}
