//! `ff`: run the FlowFabric HTTP server, manage the schema, or run the demo.
//!
//! Configuration is read once, from flags and their environment variables (`ff <command>
//! --help` lists both). Every command shuts down cleanly on Ctrl-C or SIGTERM.

mod database;
mod demo;
mod migrate;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// FlowFabric: a Postgres-native durable execution engine.
#[derive(Parser)]
#[command(name = "ff", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (`/v1/...`, `/healthz`, `/metrics`, `/openapi.json`).
    Serve(serve::ServeArgs),
    /// Apply the schema migrations, or show the schema version.
    Migrate(migrate::MigrateArgs),
    /// Run the engine with a demo workload: a server, a pool of workers, a mixed workload with
    /// retries, a cancellation and a crashed worker; prints a summary and exits 0 when the
    /// outcome is what the workload expects.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Demo(args) => demo::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
