//! `ff`: run the FlowFabric HTTP server, manage the schema, run the demo, or act on a running
//! server as an operator (`ff executions ...`, `ff workers ...`, `ff budgets ...`,
//! `ff quotas ...`, over the HTTP API).
//!
//! Configuration is read once, from flags and their environment variables (`ff <command>
//! --help` lists both). Every command shuts down cleanly on Ctrl-C or SIGTERM. Logs go to
//! stderr (`RUST_LOG`); spans are exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (`ff_sdk::telemetry`).

mod allocator;
mod api;
mod budgets;
mod database;
mod demo;
mod executions;
mod migrate;
mod output;
mod quotas;
mod serve;
mod workers;

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
    Serve(Box<serve::ServeArgs>),
    /// Apply the schema migrations, or show the schema version.
    Migrate(migrate::MigrateArgs),
    /// Run the engine with a demo workload: a server, a pool of workers, a mixed workload with
    /// retries, cancellations (by a handler and by an operator), a replay and a crashed worker;
    /// prints a summary and exits 0 when the outcome is what the workload expects.
    Demo(demo::DemoArgs),
    /// Inspect and act on executions of a running server (list, show, cancel, replay, priority,
    /// revoke); FF_URL and FF_API_TOKEN name the server.
    Executions(executions::ExecutionsArgs),
    /// Inspect the worker registry of a running server.
    Workers(workers::WorkersArgs),
    /// Create, show, charge, limit and reset budgets of a running server.
    Budgets(budgets::BudgetsArgs),
    /// Create and show quota policies of a running server.
    Quotas(quotas::QuotasArgs),
}

fn main() -> ExitCode {
    let small_pages = ff_server::process::keep_small_pages();
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo(_) | Command::Executions(_) | Command::Workers(_) | Command::Budgets(_) | Command::Quotas(_) => {
            "warn"
        }
        _ => "info",
    };
    // Logs on stderr; spans exported over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let service = match cli.command {
        Command::Serve(_) => "flowfabric-server",
        _ => "ff",
    };
    let telemetry = match ff_sdk::telemetry::install(&ff_sdk::telemetry::TelemetryConfig {
        default_filter: default_level.to_owned(),
        ..ff_sdk::telemetry::TelemetryConfig::new(service)
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot set up tracing: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = small_pages {
        tracing::debug!(error = %e, "transparent huge pages stay on for this process");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(allocator::collect_if_asked)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Executions(args) => executions::run(args).await,
            Command::Workers(args) => workers::run(args).await,
            Command::Budgets(args) => budgets::run(args).await,
            Command::Quotas(args) => quotas::run(args).await,
        }
    });
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C and SIGTERM, caught from the moment [`Signals::install`] returns: a signal that
/// arrives while an embedded cluster is still starting is delivered afterwards instead of
/// killing the process and leaving the cluster behind.
pub(crate) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching the signals.
    pub(crate) fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the next Ctrl-C or SIGTERM.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
