//! TLS for PostgreSQL (SPEC §13): `DATABASE_URL`'s `sslmode` and
//! `sslrootcert` read as libpq reads them, so the URL a managed PostgreSQL
//! service hands out works here unchanged.
//!
//! | sslmode | encrypted | server checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (libpq's default) | if the server offers it | no |
//! | `require` | always | no (as `verify-ca` when `sslrootcert` is given, as libpq does) |
//! | `verify-ca` | always | its certificate chains to a trusted root |
//! | `verify-full` | always | that, and it is issued for the host in the URL |
//!
//! The trusted roots are the file `sslrootcert` names (PEM), or the
//! system's (`/etc/ssl/certs` and the like) when it is not given or is
//! `system` (libpq 16's spelling).
//!
//! The client (`tokio-postgres`) knows only `disable`/`prefer`/`require`
//! and no `sslrootcert`; those two are read and taken out of the URL here,
//! and the checking is rustls's, configured per mode.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How much of the server the client checks (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Result<SslMode, String> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` tries without TLS first: nothing a rented
            // database accepts, and one more mode to get wrong.
            other => {
                return Err(format!(
                "sslmode={other} is not supported: use disable, prefer, require, verify-ca or verify-full"
            ))
            }
        })
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    System,
    File(String),
}

/// A `DATABASE_URL` split into what the client reads and what this module
/// reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL without `sslmode`/`sslrootcert`, for `postgres::Config`.
    pub client_url: String,
    pub mode: SslMode,
    pub roots: Roots,
}

/// Reads `sslmode` and `sslrootcert` out of the URL's query string
/// (percent-decoded, as libpq does).
pub fn parse(url: &str) -> Result<Target, String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = None;
    let mut rootcert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("DATABASE_URL: {key} is not valid UTF-8"))?
            .into_owned();
        match key {
            "sslmode" => mode = Some(SslMode::parse(&decoded)?),
            "sslrootcert" => rootcert = Some(decoded),
            _ => kept.push(pair),
        }
    }
    let roots = match rootcert.as_deref() {
        None | Some("system") => Roots::System,
        Some("") => return Err("DATABASE_URL: sslrootcert is empty".into()),
        Some(path) => Roots::File(path.to_owned()),
    };
    let mode = match (mode, &rootcert) {
        // libpq 16: sslrootcert=system without a mode means verify-full;
        // a weaker mode with it is refused there too.
        (None, Some(r)) if r == "system" => SslMode::VerifyFull,
        (Some(m), Some(r)) if r == "system" && m != SslMode::VerifyFull => {
            return Err("DATABASE_URL: sslrootcert=system needs sslmode=verify-full".into())
        }
        // libpq: "require" with a root certificate file checks the chain.
        (Some(SslMode::Require), Some(_)) => SslMode::VerifyCa,
        (Some(m), _) => m,
        (None, _) => SslMode::Prefer,
    };
    let client_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Target {
        client_url,
        mode,
        roots,
    })
}

/// The client's configuration and the TLS connector for `target`.
pub fn config(target: &Target) -> Result<(postgres::Config, MakeRustlsConnect), String> {
    let mut config: postgres::Config = target
        .client_url
        .parse()
        .map_err(|e| format!("DATABASE_URL: {e}"))?;
    // A network cut sends no error: without these a connection (and the
    // request on it) would wait for the kernel's TCP timeout, minutes.
    // The URL may say otherwise (connect_timeout, keepalives_idle, …).
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    if !target.client_url.contains("keepalives_idle") {
        config.keepalives_idle(std::time::Duration::from_secs(15));
    }
    if !target.client_url.contains("keepalives_interval") {
        config.keepalives_interval(std::time::Duration::from_secs(5));
    }
    if !target.client_url.contains("keepalives_retries") {
        config.keepalives_retries(3);
    }
    if !target.client_url.contains("tcp_user_timeout") {
        config.tcp_user_timeout(std::time::Duration::from_secs(30));
    }
    config.ssl_mode(match target.mode {
        SslMode::Disable => postgres::config::SslMode::Disable,
        SslMode::Prefer => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    });
    Ok((config, MakeRustlsConnect::new(client_config(target)?)))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(target: &Target) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match target.mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(Unchecked(provider())),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(load_roots(&target.roots)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("TLS roots: {e}"))?;
            if target.mode == SslMode::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn load_roots(roots: &Roots) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // One unreadable system certificate must not make the
                // others unusable; libpq (OpenSSL) skips them too.
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(format!(
                    "no system root certificates found ({}); install ca-certificates or give sslrootcert=<file>",
                    found
                        .errors
                        .first()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "none readable".into())
                ));
            }
        }
        Roots::File(path) => {
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {path}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("sslrootcert {path}: no PEM certificate in it"));
            }
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
        }
    }
    Ok(store)
}

/// `prefer`/`require`: encrypted, the server not checked (libpq's meaning:
/// these protect against eavesdropping only). Signatures are still checked,
/// so the handshake itself is sound.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

/// `verify-ca`: the chain must lead to a trusted root; the name in the
/// certificate is not compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_read_as_libpq_reads_them() {
        let t = parse("postgres://u:p@db.example.com:5432/shop").unwrap();
        assert_eq!(t.mode, SslMode::Prefer);
        assert_eq!(t.roots, Roots::System);
        assert_eq!(t.client_url, "postgres://u:p@db.example.com:5432/shop");

        let t = parse(
            "postgres://h/d?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem",
        )
        .unwrap();
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.roots, Roots::File("/etc/ca x.pem".into()));
        assert_eq!(t.client_url, "postgres://h/d?connect_timeout=5");

        assert_eq!(
            parse("postgres://h/d?sslmode=require&sslrootcert=/ca.pem")
                .unwrap()
                .mode,
            SslMode::VerifyCa
        );
        assert_eq!(
            parse("postgres://h/d?sslrootcert=system").unwrap().mode,
            SslMode::VerifyFull
        );
        assert!(parse("postgres://h/d?sslmode=require&sslrootcert=system").is_err());
        assert!(parse("postgres://h/d?sslmode=allow").is_err());
        assert!(parse("postgres://h/d?sslmode=verify-full&sslrootcert=").is_err());
        for mode in ["disable", "prefer", "require", "verify-ca"] {
            let t = parse(&format!("postgres://h/d?sslmode={mode}")).unwrap();
            assert_eq!(t.client_url, "postgres://h/d");
            assert!(config(&t).is_ok(), "{mode}");
        }
    }

    #[test]
    fn a_missing_root_file_is_named() {
        let t =
            parse("postgres://h/d?sslmode=verify-full&sslrootcert=/nonexistent/root.crt").unwrap();
        let e = config(&t).err().unwrap();
        assert!(e.contains("sslrootcert /nonexistent/root.crt"), "{e}");
    }
}
