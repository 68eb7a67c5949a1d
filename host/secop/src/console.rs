//! `secop console`: serve the read-only web console (host/console).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};

use crate::output::Connection;

#[derive(Args, Debug)]
pub struct ConsoleArgs {
    /// Address to serve on (the chart's Service targets it; reach it with
    /// `kubectl port-forward`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Elasticsearch (a read-only user: docs/console.md; never sent to the
    /// browser). Without an endpoint the Events, Inventory and CTEM pages
    /// say Elasticsearch is not configured.
    #[command(flatten)]
    connection: Connection,
    #[arg(long, default_value = "security-inventory")]
    index_inventory: String,
    #[arg(long, default_value = "security-events")]
    index_events: String,
    #[arg(long, default_value = "security-vuln")]
    index_vulnerabilities: String,
    /// Namespace of the sensors (the CTEM checklist's VAL-05).
    #[arg(long, default_value = "security-system")]
    sensor_namespace: String,
    /// `kubernetes`: visitors log in with a Kubernetes bearer token whose
    /// user may list SecurityAgents (checked by the API server); `none`:
    /// whoever reaches the port may look.
    #[arg(long, value_enum, default_value_t = Auth::Kubernetes)]
    auth: Auth,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Auth {
    Kubernetes,
    None,
}

pub fn console(args: &ConsoleArgs) -> Result<ExitCode> {
    // A page waits for Elasticsearch at most this long.
    let elastic = args.connection.configured_client(Some(std::time::Duration::from_secs(10)))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let kube = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
        let console = secop_console::Console {
            kube,
            elastic,
            elastic_endpoints: args.connection.endpoints().to_vec(),
            indices: secop_console::Indices {
                inventory: args.index_inventory.clone(),
                events: args.index_events.clone(),
                vulnerabilities: args.index_vulnerabilities.clone(),
            },
            sensor_namespace: args.sensor_namespace.clone(),
            auth: match args.auth {
                Auth::Kubernetes => secop_console::auth::Mode::Kubernetes,
                Auth::None => secop_console::auth::Mode::Open,
            },
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!("console: serving http://{}", listener.local_addr()?);
        secop_console::serve(listener, console).await.context("serving the console")?;
        Ok(ExitCode::SUCCESS)
    })
}
