//! TLS settings given through the configuration, applied over the URL's.

use sqlx::postgres::PgConnectOptions;

use crate::error::Error;

/// How the provider's connections use TLS: libpq's `sslmode`, settable in the
/// URL (`?sslmode=verify-full`) or with [`crate::PostgresConfig::with_ssl_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate
    /// (the URL default).
    Prefer,
    /// TLS always, without checking the certificate.
    Require,
    /// TLS always; the certificate must chain to the root certificate.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    /// What a managed cloud database should use.
    VerifyFull,
}

/// TLS settings given through the configuration (they override the URL's).
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    pub(super) mode: Option<SslMode>,
    pub(super) root_cert: Option<std::path::PathBuf>,
    pub(super) client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl TlsSettings {
    /// `options` with these settings on top. Files are checked here, so a
    /// wrong path is a configuration error, not a connection failure.
    pub(super) fn apply(&self, mut options: PgConnectOptions) -> Result<PgConnectOptions, Error> {
        use sqlx::postgres::PgSslMode;
        fn readable(what: &str, path: &std::path::Path) -> Result<(), Error> {
            std::fs::File::open(path)
                .map(drop)
                .map_err(|e| Error::InvalidConfig(format!("{what} {}: {e}", path.display())))
        }
        if let Some(mode) = self.mode {
            options = options.ssl_mode(match mode {
                SslMode::Disable => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                SslMode::Require => PgSslMode::Require,
                SslMode::VerifyCa => PgSslMode::VerifyCa,
                SslMode::VerifyFull => PgSslMode::VerifyFull,
            });
        }
        if let Some(root) = &self.root_cert {
            readable("TLS root certificate", root)?;
            options = options.ssl_root_cert(root);
        }
        if let Some((cert, key)) = &self.client {
            readable("TLS client certificate", cert)?;
            readable("TLS client key", key)?;
            options = options.ssl_client_cert(cert).ssl_client_key(key);
        }
        Ok(options)
    }
}
