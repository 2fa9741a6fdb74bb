//! How the admin commands (`ff executions`, `ff workers`, `ff budgets`, `ff quotas`) reach a
//! server: its URL, the bearer token and an extra CA file, from flags or their environment
//! variables. Every admin command flattens [`ApiArgs`] and talks to the HTTP API only through
//! [`ff_sdk::Client`].

use std::path::PathBuf;

use anyhow::Context;
use ff_sdk::{Client, ClientConfig};

/// Where the server is and how to authenticate.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct ApiArgs {
    /// Base URL of the FlowFabric server.
    #[arg(long, env = "FF_URL", default_value = "http://127.0.0.1:9090", global = true)]
    pub(crate) url: String,
    /// Bearer token the server requires (the token it was started with, `ff serve --api-token`).
    #[arg(long, env = "FF_API_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
    /// PEM file of CA certificates trusted for an https:// URL besides the public roots.
    #[arg(long, env = "FF_CA_FILE", global = true)]
    pub(crate) ca_file: Option<PathBuf>,
}

impl ApiArgs {
    /// A client of the server these arguments name.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new(&self.url);
        if let Some(ca) = &self.ca_file {
            config = config.with_ca_file(ca);
        }
        let client = Client::with_config(config).context("configuring the API client")?;
        Ok(match &self.token {
            Some(token) => client.with_token(token),
            None => client,
        })
    }
}
