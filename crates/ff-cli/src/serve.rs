//! `ff serve`: the HTTP server until Ctrl-C / SIGTERM, on the given database or, with
//! `--embedded`, on a private cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use ff_server::{Server, ServerConfig};

use crate::database::Database;

/// Arguments of `ff serve`.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    server: ServerConfig,
    /// Run on a private PostgreSQL cluster started from the system's binaries (ignores
    /// DATABASE_URL).
    #[arg(long)]
    embedded: bool,
    /// Data directory of the embedded cluster (kept across runs); a temporary one when unset.
    #[arg(long, env = "FF_DATA_DIR", requires = "embedded")]
    data_dir: Option<PathBuf>,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if !args.embedded && args.server.database_url.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!("set DATABASE_URL (or --database-url), or pass --embedded to run on a private cluster");
    }
    let mut signals = crate::Signals::install()?;
    let db = Database::open(args.server.database_url.as_deref(), args.embedded, args.data_dir).await?;
    let mut cfg = args.server;
    cfg.database_url = Some(db.url().to_owned());
    let served = async {
        let server = Server::start(cfg).await?;
        eprintln!("FlowFabric API on {} (Ctrl-C to stop)", server.url());
        let releasing = tokio::spawn(crate::allocator::release_after_bursts(server.body_budget().clone()));
        signals.recv().await;
        releasing.abort();
        eprintln!("Shutting down: draining requests and reconcilers...");
        server.shutdown().await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    db.stop().await?;
    served?;
    Ok(ExitCode::SUCCESS)
}
