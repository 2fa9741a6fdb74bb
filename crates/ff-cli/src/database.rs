//! Where the database comes from: the given URL, or a private embedded cluster that this
//! process starts and stops.

use std::path::PathBuf;

use anyhow::Context;
use ff_embedded_pg::{EmbeddedOptions, EmbeddedPostgres};

/// A database for the lifetime of a command.
pub(crate) enum Database {
    /// A server someone else runs.
    External(String),
    /// A private cluster this process started; stopped by [`Database::stop`] (or on drop).
    Embedded(EmbeddedPostgres),
}

impl Database {
    /// Uses `url` when given (and `force_embedded` is off), else starts a private cluster in
    /// `data_dir` (a temporary directory, removed on stop, when `None`).
    pub(crate) async fn open(
        url: Option<&str>,
        force_embedded: bool,
        data_dir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        match url.filter(|u| !u.is_empty() && !force_embedded) {
            Some(url) => Ok(Self::External(url.to_owned())),
            None => {
                eprintln!("Starting a private PostgreSQL cluster (set DATABASE_URL to use your own server)...");
                let opts = EmbeddedOptions { data_dir, ..EmbeddedOptions::default() };
                let pg = EmbeddedPostgres::start(opts).await.context("could not start the embedded PostgreSQL")?;
                eprintln!("PostgreSQL is up at {} (data in {})", pg.url(), pg.data_dir().display());
                Ok(Self::Embedded(pg))
            }
        }
    }

    /// The connection URL.
    pub(crate) fn url(&self) -> &str {
        match self {
            Self::External(url) => url,
            Self::Embedded(pg) => pg.url(),
        }
    }

    /// Stops the embedded cluster, if any.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        if let Self::Embedded(pg) = self {
            pg.stop().await.context("stopping the embedded PostgreSQL")?;
        }
        Ok(())
    }
}
