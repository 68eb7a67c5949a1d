//! The commands that run in pods next to the data, on the operator image:
//! `secop es-setup` (the gateway's init container) and `secop trivy-sync`
//! (the trivy feature's sync Deployment), and `secop ctem-report`. Credentials come from the environment
//! (`ES_USERNAME`/`ES_PASSWORD`, from the CR's `authSecretRef`) and the CA
//! from a mounted file (`caSecretRef`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use secop_elastic::bulk::BulkOptions;
use secop_elastic::ctem;
use secop_elastic::templates::{self, Indices};
use secop_elastic::trivy::{self, Severity, SyncOptions};
use secop_elastic::{Elastic, ElasticConfig};
use serde_json::Value;

#[derive(Args, Debug)]
pub struct Connection {
    /// Elasticsearch endpoint (repeatable; tried in order; `secop console`
    /// also runs without one).
    #[arg(long = "endpoint")]
    endpoints: Vec<String>,
    /// PEM file of the CA that signed Elasticsearch's certificate.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Elasticsearch user (the console's is a read-only one: docs/console.md).
    #[arg(long, env = "ES_USERNAME", hide_env_values = true)]
    username: Option<String>,
    #[arg(long, env = "ES_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

impl Connection {
    pub(crate) fn client(&self) -> Result<Elastic> {
        self.configured_client(None)?.context("no Elasticsearch endpoint: pass --endpoint URL")
    }

    /// The client if an endpoint was given (`secop console` also runs
    /// without one); a request waits at most `timeout` (the client's
    /// default without it).
    pub(crate) fn configured_client(&self, timeout: Option<Duration>) -> Result<Option<Elastic>> {
        if self.endpoints.is_empty() {
            return Ok(None);
        }
        let mut config = ElasticConfig::new(self.endpoints.clone());
        config.username = self.username.clone();
        config.password = self.password.clone();
        config.ca_file = self.ca_file.clone();
        if let Some(timeout) = timeout {
            config.timeout = timeout;
        }
        Ok(Some(Elastic::new(&config)?))
    }

    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }
}

#[derive(Args, Debug)]
pub struct EsSetup {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    index_inventory: Option<String>,
    #[arg(long)]
    index_events: Option<String>,
    #[arg(long)]
    index_vulnerabilities: Option<String>,
    /// How long to keep trying while Elasticsearch is unreachable.
    #[arg(long, default_value_t = 300)]
    wait_seconds: u64,
}

#[derive(Args, Debug)]
pub struct CtemReport {
    #[command(flatten)]
    connection: Connection,
    #[arg(long, default_value = "security-inventory")]
    index_inventory: String,
    #[arg(long, default_value = "security-events")]
    index_events: String,
    #[arg(long, default_value = "security-vuln")]
    index_vulnerabilities: String,
    /// Namespace of the sensors (events attributed there name a sensor, not the subject).
    #[arg(long, default_value = "security-system")]
    sensor_namespace: String,
    /// Only documents since this time: an Elasticsearch date or date math (`now-15m`).
    #[arg(long)]
    since: Option<String>,
    /// `table` (default) or `json`.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

#[derive(Args, Debug)]
pub struct TrivySync {
    #[command(flatten)]
    connection: Connection,
    /// The vulnerabilities index.
    #[arg(long, default_value = "security-vuln")]
    index: String,
    /// `orchestrator.cluster.name` of every finding (and the scope of resolution).
    #[arg(long)]
    cluster_name: String,
    /// Lowest severity written (UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL).
    #[arg(long, default_value = "HIGH", value_parser = |s: &str| s.parse::<Severity>())]
    severity_threshold: Severity,
    /// Only reports in this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// Items per bulk request.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Keep running: sync when the reports change (watched on the API
    /// server) and every `--resync-seconds`, instead of once.
    #[arg(long)]
    watch: bool,
    /// With --watch: wait this long after a change for more changes before
    /// syncing (a scan writes many reports at once).
    #[arg(long, default_value_t = 20, requires = "watch")]
    settle_seconds: u64,
    /// With --watch: a full sync at least this often, changes or not.
    #[arg(long, default_value_t = 21600, requires = "watch")]
    resync_seconds: u64,
}

/// Retry `f` while its error is transient, up to `wait`.
pub(crate) async fn with_patience<T, F, Fut>(what: &str, wait: Duration, mut f: F) -> Result<T, secop_elastic::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, secop_elastic::Error>>,
{
    let start = Instant::now();
    let mut backoff = Duration::from_secs(1);
    loop {
        match f().await {
            Err(e) if e.is_transient() && start.elapsed() + backoff < wait => {
                eprintln!("{what}: {e}; retrying in {}s", backoff.as_secs());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(15));
            }
            other => return other,
        }
    }
}

pub fn es_setup(args: &EsSetup) -> Result<ExitCode> {
    let es = args.connection.client()?;
    let indices = Indices {
        inventory: args.index_inventory.clone(),
        events: args.index_events.clone(),
        vulnerabilities: args.index_vulnerabilities.clone(),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(with_patience("es-setup", Duration::from_secs(args.wait_seconds), || {
        templates::install(&es, &indices)
    }))?;
    println!(
        "index templates: {} written, {} unchanged; wildcard field type {}",
        report.written.len(),
        report.unchanged.len(),
        if report.wildcard { "available" } else { "unavailable (keyword + text instead)" }
    );
    Ok(ExitCode::SUCCESS)
}

/// The VulnerabilityReports of one namespace, or of all (whole objects,
/// or `PartialObjectMeta` for metadata-only requests).
async fn reports_api<K>(namespace: Option<&str>) -> Result<Api<K>>
where
    K: kube::Resource<DynamicType = ApiResource, Scope = kube::core::DynamicResourceScope>,
{
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("aquasecurity.github.io", "v1alpha1", "VulnerabilityReport"),
        "vulnerabilityreports",
    );
    Ok(match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    })
}

/// Every VulnerabilityReport, page by page.
async fn list_reports(namespace: Option<&str>) -> Result<Vec<Value>> {
    let api = reports_api::<DynamicObject>(namespace).await?;
    let mut out = vec![];
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await.map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 404 => {
                anyhow::anyhow!("the VulnerabilityReport CRD (aquasecurity.github.io/v1alpha1) is not installed: is the trivy feature enabled?")
            }
            _ => anyhow::anyhow!("listing VulnerabilityReports: {e}"),
        })?;
        for item in page.items {
            out.push(serde_json::to_value(item)?);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

pub fn trivy_sync(args: &TrivySync) -> Result<ExitCode> {
    let es = args.connection.client()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        // Templates first: the first write would otherwise create the index
        // with guessed mappings.
        let indices = Indices { vulnerabilities: Some(args.index.clone()), ..Default::default() };
        with_patience("trivy-sync", Duration::from_secs(120), || templates::install(&es, &indices)).await?;
        if args.watch {
            return watch_reports(&es, args).await;
        }
        let report = sync_reports(&es, args).await?;
        Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}

/// One full sync: every report listed, findings upserted, findings of
/// vanished reports resolved; the summary printed.
async fn sync_reports(es: &Elastic, args: &TrivySync) -> Result<trivy::SyncReport> {
    let reports = list_reports(args.namespace.as_deref()).await?;
    let options = SyncOptions::new(&args.index, &args.cluster_name, args.severity_threshold);
    let bulk_options = BulkOptions { max_actions: args.batch_size.max(1), ..Default::default() };
    let report = trivy::sync(es, &reports, &options, &bulk_options).await?;
    println!(
        "trivy-sync: {} reports, {} findings at or above {}: {} created, {} updated, {} failed; {} resolved",
        report.reports,
        report.findings,
        args.severity_threshold,
        report.upserts.created,
        report.upserts.updated,
        report.upserts.failed.len(),
        report.resolved
    );
    for failure in report.upserts.failed.iter().take(20) {
        eprintln!("error: finding {}: HTTP {}: {}", failure.id, failure.status, failure.reason);
    }
    for skipped in &report.skipped {
        eprintln!("error: skipped: {skipped}");
    }
    if let Some(why) = &report.resolve_skipped {
        eprintln!("warning: resolution of vanished findings skipped: {why}");
    }
    Ok(report)
}

/// `--watch`: the Trivy Operator writes a report minutes after a workload
/// starts, and the vulnerabilities index should have it minutes later, not
/// at the next scheduled run. Report metadata is watched (metadata-only
/// requests: no vulnerability lists in the stream); a change marks the
/// index stale, and a stale index is synced once no change came for
/// `--settle-seconds`, or at the latest five settle periods after the first
/// unsynced change (a cluster whose reports never stop changing still gets
/// synced). A full sync also runs every `--resync-seconds`. A sync that
/// failed, or wrote only part of the findings, is retried with backoff
/// (the settle period, doubling, at most 5 minutes); the command never
/// exits on its own.
async fn watch_reports(es: &Elastic, args: &TrivySync) -> Result<ExitCode> {
    use futures::StreamExt as _;
    use kube::core::PartialObjectMeta;
    use kube::runtime::{WatchStreamExt as _, watcher};

    let api = reports_api::<PartialObjectMeta<DynamicObject>>(args.namespace.as_deref()).await?;
    let mut changes = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let settle = Duration::from_secs(args.settle_seconds.max(1));
    let resync = Duration::from_secs(args.resync_seconds.max(1));
    let max_backoff = Duration::from_secs(300);
    // Changes not yet synced: when the first and the last of them came.
    let (mut first_unsynced, mut last_change): (Option<Instant>, Option<Instant>) =
        (Some(Instant::now()), Some(Instant::now()));
    let mut last_sync: Option<Instant> = None;
    let (mut next_attempt, mut backoff) = (Instant::now(), settle);
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(settle));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    println!(
        "trivy-sync: watching VulnerabilityReports; sync {}s after a change, fully every {}s",
        settle.as_secs(),
        resync.as_secs()
    );
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(Ok(_)) => {
                    let now = Instant::now();
                    first_unsynced.get_or_insert(now);
                    last_change = Some(now);
                }
                Some(Err(e)) => eprintln!("warning: watching VulnerabilityReports: {e}"),
                None => anyhow::bail!("the VulnerabilityReport watch ended"),
            },
            _ = tick.tick() => {
                let settled = last_change.is_some_and(|t| t.elapsed() >= settle) || first_unsynced.is_some_and(|t| t.elapsed() >= settle * 5);
                let due = last_sync.is_none_or(|t| t.elapsed() >= resync);
                if !(settled || due) || Instant::now() < next_attempt {
                    continue;
                }
                let started = Instant::now();
                let failure = match sync_reports(es, args).await {
                    Ok(report) if report.ok() => None,
                    Ok(_) => Some("some findings were not written (named above)".to_string()),
                    Err(e) => Some(format!("{e:#}")),
                };
                match failure {
                    None => {
                        last_sync = Some(started);
                        (first_unsynced, last_change) = (None, None);
                        backoff = settle;
                    }
                    Some(why) => {
                        eprintln!("error: trivy-sync: {why}; retrying in {}s", backoff.as_secs());
                        first_unsynced.get_or_insert(started);
                        last_change.get_or_insert(started);
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(max_backoff);
                    }
                }
            }
        }
    }
}

pub fn ctem_report(args: &CtemReport) -> Result<ExitCode> {
    let es = args.connection.client()?;
    let scope = ctem::Scope {
        inventory: args.index_inventory.clone(),
        events: args.index_events.clone(),
        vulnerabilities: args.index_vulnerabilities.clone(),
        sensor_namespace: args.sensor_namespace.clone(),
        since: args.since.clone(),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let checks = runtime.block_on(ctem::run(&es, &scope)).context("reading the CTEM checklist from Elasticsearch")?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print!("{}", ctem::table(&checks));
    }
    Ok(if checks.iter().any(|c| c.outcome == ctem::Outcome::Fail) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
