//! How connections to Postgres are made: TLS settings ([`SslMode`], [`RootCert`]) taken from the
//! URL's `sslmode` / `sslrootcert` parameters or from [`BackendConfig`]'s fields, resolved once
//! into `PgConnectOptions` ([`BackendConfig::connect_options`]); and the pool built from them.
//!
//! Invariants: a CA file is read and checked when the options are resolved, so an unreadable or
//! empty file is a [`ConnectConfigError`] before any connection is tried; the meaning of each
//! mode follows libpq: `verify-ca` and `verify-full` need a root certificate (a file, or
//! `system` for the bundled public roots, which only `verify-full` may use), and a CA file
//! upgrades `require` to `verify-ca`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use std::time::Duration;

use ff_core::EngineError;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

use crate::config::BackendConfig;
use crate::error::map_sqlx;

/// Pause between attempts while [`connect_pool`] waits for the database.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// When this process started, the origin of [`RECYCLE_BEFORE_MS`].
static PROCESS_START: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);
/// Pooled connections opened before this many ms after [`PROCESS_START`] are closed instead of
/// reused (0: none).
static RECYCLE_BEFORE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Asks every pool of this process to replace the connections it holds now, each the next time
/// it is released or handed out. A connection keeps its read and write buffers at the size of
/// the largest message it carried, so after a burst of large payloads the pool would otherwise
/// hold that memory for as long as the connections live.
pub fn recycle_connections() {
    let now = (PROCESS_START.elapsed().as_millis() as u64).max(1);
    RECYCLE_BEFORE_MS.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a connection of this `age` was opened before the last [`recycle_connections`].
fn due_for_recycling(age: Duration) -> bool {
    let mark = RECYCLE_BEFORE_MS.load(std::sync::atomic::Ordering::Relaxed);
    mark > 0 && PROCESS_START.elapsed().saturating_sub(age) < Duration::from_millis(mark)
}

/// Whether and how the connection to Postgres is encrypted and the server verified (libpq's
/// `sslmode`, without `allow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain connections only.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is not checked (unless a CA file is given, which
    /// makes this `verify-ca`, as in libpq).
    Require,
    /// TLS, and the server's certificate must chain to the root certificate.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = ConnectConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" | "verify_ca" => Self::VerifyCa,
            "verify-full" | "verify_full" => Self::VerifyFull,
            _ => return Err(ConnectConfigError::UnknownSslMode(s.to_owned())),
        })
    }
}

/// The root certificates a verifying [`SslMode`] checks the server against (libpq's
/// `sslrootcert`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    /// PEM certificates in this file (the bundled public roots stay trusted too).
    File(PathBuf),
    /// The bundled public roots (Mozilla's list), spelled `system`; needs `verify-full`.
    System,
}

impl FromStr for RootCert {
    type Err = ConnectConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err(ConnectConfigError::EmptyRootCert),
            "system" => Ok(Self::System),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

impl fmt::Display for RootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::System => f.write_str("system"),
        }
    }
}

/// Why the connection settings cannot be used; found before any connection is tried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectConfigError {
    /// The URL does not parse or is not a Postgres URL.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// `sslmode` is not one of disable, prefer, require, verify-ca, verify-full.
    #[error("unknown sslmode {0:?}: use disable, prefer, require, verify-ca or verify-full")]
    UnknownSslMode(String),
    /// `sslrootcert` is empty.
    #[error("sslrootcert is empty: give a PEM file or `system`")]
    EmptyRootCert,
    /// The URL and the separate setting give different values for one parameter.
    #[error("{name} is {in_url:?} in the database url but {in_setting:?} in its own setting; give it once")]
    Conflict {
        /// The parameter (`sslmode` or `sslrootcert`).
        name: &'static str,
        /// The URL's value.
        in_url: String,
        /// The setting's value.
        in_setting: String,
    },
    /// A verifying mode has no root certificate to verify against.
    #[error(
        "sslmode={mode} verifies the server's certificate but no sslrootcert is set: give the CA \
         file (sslrootcert=/path/ca.pem), or sslrootcert=system with verify-full for a \
         certificate from a public CA"
    )]
    MissingRootCert {
        /// The mode.
        mode: SslMode,
    },
    /// `sslrootcert=system` with a mode other than `verify-full`.
    #[error(
        "sslrootcert=system needs sslmode=verify-full (got {mode}): public roots without a host name check prove nothing"
    )]
    SystemRootsNeedVerifyFull {
        /// The mode.
        mode: SslMode,
    },
    /// A root certificate with `sslmode=disable`, which would silently ignore it.
    #[error("sslrootcert is set but sslmode=disable: the certificate would be ignored")]
    RootCertWithoutTls,
    /// The CA file cannot be read.
    #[error("cannot read sslrootcert {}: {source}", .path.display())]
    UnreadableRootCert {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate.
    #[error("sslrootcert {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", .path.display())]
    NoCertificateInRootCert {
        /// The file.
        path: PathBuf,
    },
}

/// The TLS parameters read from a URL, and the URL without them.
struct UrlTls {
    rest: String,
    ssl_mode: Option<String>,
    root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` (and sqlx's aliases) out of the URL's query.
fn split_tls_params(url: &str) -> Result<UrlTls, ConnectConfigError> {
    let mut parsed = url::Url::parse(url).map_err(|e| ConnectConfigError::InvalidUrl(e.to_string()))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(ConnectConfigError::InvalidUrl("it must start with postgres:// or postgresql://".into()));
    }
    let (mut ssl_mode, mut root_cert, mut kept) = (None, None, Vec::new());
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "sslmode" | "ssl-mode" => ssl_mode = Some(value.into_owned()),
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => root_cert = Some(value.into_owned()),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok(UrlTls { rest: parsed.into(), ssl_mode, root_cert })
}

/// One value from the URL or the setting; both given must agree.
fn one_of<T: FromStr<Err = ConnectConfigError> + PartialEq + fmt::Display + Clone>(
    name: &'static str,
    in_url: Option<String>,
    in_setting: Option<&T>,
) -> Result<Option<T>, ConnectConfigError> {
    let from_url = in_url.as_deref().map(T::from_str).transpose()?;
    match (from_url, in_setting) {
        (Some(u), Some(s)) if u != *s => {
            Err(ConnectConfigError::Conflict { name, in_url: u.to_string(), in_setting: s.to_string() })
        }
        (Some(u), _) => Ok(Some(u)),
        (None, s) => Ok(s.cloned()),
    }
}

impl BackendConfig {
    /// The connection options: the URL with its TLS parameters and the TLS fields resolved
    /// together (the default mode is `prefer`), the CA file read and checked.
    pub fn connect_options(&self) -> Result<PgConnectOptions, ConnectConfigError> {
        let url = split_tls_params(&self.url)?;
        let mode = one_of("sslmode", url.ssl_mode, self.ssl_mode.as_ref())?.unwrap_or(SslMode::Prefer);
        let root = one_of("sslrootcert", url.root_cert, self.ssl_root_cert.as_ref())?;
        let options =
            PgConnectOptions::from_str(&url.rest).map_err(|e| ConnectConfigError::InvalidUrl(e.to_string()))?;
        let (mode, pem) = match (mode, root) {
            (SslMode::Disable, Some(_)) => return Err(ConnectConfigError::RootCertWithoutTls),
            (mode, None) if mode.verifies() => return Err(ConnectConfigError::MissingRootCert { mode }),
            (mode, None) => (mode, None),
            (SslMode::VerifyFull, Some(RootCert::System)) => (SslMode::VerifyFull, None),
            (mode, Some(RootCert::System)) => return Err(ConnectConfigError::SystemRootsNeedVerifyFull { mode }),
            (mode, Some(RootCert::File(path))) => {
                let mode = if mode == SslMode::Require { SslMode::VerifyCa } else { mode };
                (mode, Some(read_root_cert(path)?))
            }
        };
        let options = options.ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
        Ok(match pem {
            Some(pem) => options.ssl_root_cert_from_pem(pem),
            None => options,
        })
    }

    /// Pool options: sizes, the acquire timeout, a liveness check of idle connections before
    /// they are handed out (so connections that died in an outage are replaced, not returned),
    /// and the replacement of connections opened before a [`recycle_connections`] call.
    pub fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(true)
            .before_acquire(|_, meta| Box::pin(async move { Ok(!due_for_recycling(meta.age)) }))
            .after_release(|_, meta| Box::pin(async move { Ok(!due_for_recycling(meta.age)) }))
    }
}

/// Opens the pool described by `config` and waits, up to its connect timeout, until the
/// database accepts a first connection. Refused or timed-out attempts are retried until then;
/// any other failure (TLS, authentication, `pg_hba.conf`) is returned at once.
pub async fn connect_pool(config: &BackendConfig) -> Result<PgPool, EngineError> {
    use sqlx::{ConnectOptions, Connection};
    let options = config.connect_options().map_err(|e| EngineError::invalid(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    // The probe connects directly rather than through the pool, whose acquire timeout would
    // hide why a connection failed (a TLS or authentication error) behind "timed out".
    let mut last: Option<sqlx::Error> = None;
    loop {
        let error = match tokio::time::timeout_at(deadline, options.connect()).await {
            Ok(Ok(probe)) => {
                let _ = probe.close().await;
                return Ok(config.pool_options().connect_lazy_with(options));
            }
            Ok(Err(e)) => e,
            // Cut short by the deadline: the last completed attempt says more than "timed out".
            Err(_) => return Err(map_sqlx(last.unwrap_or(sqlx::Error::PoolTimedOut))),
        };
        // A server not accepting connections yet is worth waiting for; a TLS handshake that
        // failed (reported as invalid data, such as a certificate from an unknown issuer) is not.
        let transient = match &error {
            sqlx::Error::PoolTimedOut => true,
            sqlx::Error::Io(e) => e.kind() != std::io::ErrorKind::InvalidData,
            _ => false,
        };
        if !transient || tokio::time::Instant::now() + CONNECT_RETRY_PAUSE >= deadline {
            return Err(map_sqlx(error));
        }
        last = Some(error);
        tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
    }
}

/// Reads a CA file and checks that it holds at least one PEM certificate.
fn read_root_cert(path: PathBuf) -> Result<Vec<u8>, ConnectConfigError> {
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(source) => return Err(ConnectConfigError::UnreadableRootCert { path, source }),
    };
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        _ => Err(ConnectConfigError::NoCertificateInRootCert { path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, mode: Option<SslMode>, root: Option<&str>) -> BackendConfig {
        BackendConfig {
            ssl_mode: mode,
            ssl_root_cert: root.map(|r| r.parse().expect("root cert")),
            ..BackendConfig::new(url)
        }
    }

    #[test]
    fn parses_every_ssl_mode() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("VERIFY-FULL", SslMode::VerifyFull),
        ] {
            assert_eq!(text.parse::<SslMode>().expect(text), mode);
        }
        assert!(matches!("allow".parse::<SslMode>(), Err(ConnectConfigError::UnknownSslMode(_))));
    }

    #[test]
    fn resolves_url_and_settings_or_names_the_problem() {
        let base = "postgres://u@db.example:5432/ff";
        let missing = "/nonexistent/ca.pem";
        let cases: Vec<(BackendConfig, Result<PgSslMode, &str>)> = vec![
            (config(base, None, None), Ok(PgSslMode::Prefer)),
            (config(&format!("{base}?sslmode=require"), None, None), Ok(PgSslMode::Require)),
            (config(base, Some(SslMode::Disable), None), Ok(PgSslMode::Disable)),
            (config(&format!("{base}?sslmode=verify-full&sslrootcert=system"), None, None), Ok(PgSslMode::VerifyFull)),
            (config(&format!("{base}?sslmode=verify-full"), None, None), Err("no sslrootcert is set")),
            (config(base, Some(SslMode::VerifyCa), None), Err("no sslrootcert is set")),
            (config(base, Some(SslMode::Require), Some("system")), Err("needs sslmode=verify-full")),
            (config(base, Some(SslMode::Disable), Some(missing)), Err("sslmode=disable")),
            (config(base, Some(SslMode::VerifyFull), Some(missing)), Err("cannot read sslrootcert")),
            (config(&format!("{base}?sslmode=require"), Some(SslMode::Disable), None), Err("give it once")),
            (config(&format!("{base}?sslmode=bogus"), None, None), Err("unknown sslmode")),
            (config("mysql://u@h/db", None, None), Err("postgres://")),
        ];
        for (cfg, expected) in cases {
            match (cfg.connect_options(), expected) {
                (Ok(opts), Ok(mode)) => {
                    assert_eq!(format!("{:?}", opts.get_ssl_mode()), format!("{mode:?}"), "{}", cfg.url)
                }
                (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{}: {e}", cfg.url),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", cfg.url),
            }
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("ff-connection-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = config("postgres://u@h/db", Some(SslMode::VerifyFull), empty.to_str()).connect_options().unwrap_err();
        assert!(matches!(err, ConnectConfigError::NoCertificateInRootCert { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn other_query_parameters_survive() {
        let url = split_tls_params("postgres://u@h/db?sslmode=require&application_name=x&sslrootcert=%2Fa%20b.pem")
            .expect("parse");
        assert_eq!(url.ssl_mode.as_deref(), Some("require"));
        assert_eq!(url.root_cert.as_deref(), Some("/a b.pem"));
        assert_eq!(url.rest, "postgres://u@h/db?application_name=x");
    }
}
