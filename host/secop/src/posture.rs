//! `secop posture`: the posture engine (secop-posture) offline on a
//! snapshot (`scan`), or live on a cluster (`run`): watches over the
//! inventoried kinds → lean assets → engine → bulk writes into the
//! inventory and events indices.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core, rbac::v1 as rbac};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use secop_elastic::Elastic;
use secop_elastic::Method;
use secop_elastic::bulk::{BulkOptions, Operation, bulk};
use secop_elastic::templates::{self, Indices};
use secop_posture::model::{self, Kind};
use secop_posture::{Pass, Posture, PostureConfig, Target, Write};
use serde_json::{Value, json};

use crate::output::{Connection, with_patience};

#[derive(Subcommand, Debug)]
pub enum PostureCommand {
    /// Audit a `kubectl get ... -A -o json` snapshot offline (no cluster needed).
    Scan {
        /// The snapshot (a List, one object, or several JSON documents; `-` = stdin).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The posture feature's config (JSON or YAML): level, enable, disable, exemptions.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
        output: String,
    },
    /// Watch the cluster; keep the inventory and the alerts in Elasticsearch up to date.
    Run(Run),
    /// List the checks (ids for `enable`, `disable` and `exemptions`).
    Checks {
        #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
        output: String,
    },
}

#[derive(Args, Debug)]
pub struct Run {
    #[command(flatten)]
    connection: Connection,
    /// `orchestrator.cluster.name` of every document.
    #[arg(long)]
    cluster_name: String,
    #[arg(long, default_value = "security-inventory")]
    index_inventory: String,
    #[arg(long, default_value = "security-events")]
    index_events: String,
    /// The posture feature's config (JSON or YAML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Longest time a write waits before it is sent.
    #[arg(long, default_value_t = 1000)]
    flush_millis: u64,
}

fn read_config(path: Option<&PathBuf>) -> Result<PostureConfig> {
    let Some(path) = path else { return Ok(PostureConfig::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_yaml::from_str(&text).with_context(|| format!("{}: not YAML/JSON", path.display()))?;
    PostureConfig::parse(&value.to_string()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn run(command: &PostureCommand) -> Result<ExitCode> {
    match command {
        PostureCommand::Scan { file, config, output } => scan(file, read_config(config.as_ref())?, output),
        PostureCommand::Checks { output } => {
            list_checks(output)?;
            Ok(ExitCode::SUCCESS)
        }
        PostureCommand::Run(args) => {
            let config = read_config(args.config.as_ref())?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(watch(args, config))
        }
    }
}

fn list_checks(output: &str) -> Result<()> {
    let defaults = PostureConfig::default();
    let default_ids: Vec<&str> = defaults.active().iter().map(|c| c.id).collect();
    let checks: Vec<Value> = secop_posture::audits::CHECKS
        .iter()
        .map(|c| {
            json!({ "id": c.id, "title": c.title, "severity": c.severity, "pss": c.pss, "mitre": c.mitre,
                    "default": default_ids.contains(&c.id), "remediation": c.remediation })
        })
        .collect();
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&checks)?);
        return Ok(());
    }
    println!("{:<9} {:<4} {:<11} {:<6} {:<8} TITLE", "CHECK", "SEV", "PSS", "MITRE", "DEFAULT");
    for c in &checks {
        println!(
            "{:<9} {:<4} {:<11} {:<6} {:<8} {}",
            c["id"].as_str().unwrap_or(""),
            c["severity"].as_u64().unwrap_or(0),
            c["pss"].as_str().unwrap_or("-"),
            c["mitre"].as_str().unwrap_or(""),
            if c["default"] == true { "yes" } else { "restricted" },
            c["title"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn scan(file: &PathBuf, config: PostureConfig, output: &str) -> Result<ExitCode> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let assets = secop_posture::snapshot(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let checks = config.active();
    let mut rows = vec![];
    for asset in &assets {
        for f in secop_posture::audit(&config, &checks, asset) {
            rows.push(json!({
                "rule": { "id": f.check.id, "name": f.check.title, "pss": f.check.pss, "mitre": f.check.mitre },
                "severity": f.check.severity,
                "resource": { "kind": asset.kind.name(), "namespace": asset.namespace, "name": asset.name, "uid": asset.uid },
                "container": f.container,
                "evidence": f.evidence,
                "remediation": f.check.remediation,
            }));
        }
    }
    rows.sort_by(|a, b| {
        b["severity"]
            .as_u64()
            .cmp(&a["severity"].as_u64())
            .then_with(|| a["rule"]["id"].as_str().cmp(&b["rule"]["id"].as_str()))
    });
    if output == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "assets": assets.len(), "checks": checks.len(), "findings": rows }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<4} {:<9} {:<45} {:<14} TITLE", "SEV", "CHECK", "RESOURCE", "CONTAINER");
    for r in &rows {
        let ns = r["resource"]["namespace"].as_str().map(|n| format!("{n}/")).unwrap_or_default();
        let resource = format!(
            "{}/{ns}{}",
            r["resource"]["kind"].as_str().unwrap_or(""),
            r["resource"]["name"].as_str().unwrap_or("")
        );
        println!(
            "{:<4} {:<9} {:<45} {:<14} {}",
            r["severity"].as_u64().unwrap_or(0),
            r["rule"]["id"].as_str().unwrap_or(""),
            resource,
            r["container"].as_str().unwrap_or("-"),
            r["rule"]["name"].as_str().unwrap_or("")
        );
    }
    println!(
        "{} findings on {} assets ({} checks at level {})",
        rows.len(),
        assets.len(),
        checks.len(),
        json!(config.level).as_str().unwrap_or("")
    );
    Ok(ExitCode::SUCCESS)
}

/// A watch event, reduced to what the engine needs.
enum Change {
    ListStart(Kind),
    Applied(Box<model::Asset>),
    Deleted(String),
    ListEnd(Kind),
}

/// One kind's watch: no store is kept (the engine keeps only hashes), and
/// each object is reduced to its lean form as it arrives.
fn watch_kind<K>(client: &Client, kind: Kind) -> BoxStream<'static, Result<Change, watcher::Error>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + 'static,
{
    let lean = |object: &K| serde_json::to_value(object).ok().as_ref().and_then(model::parse).map(Box::new);
    watcher(Api::<K>::all(client.clone()), watcher::Config::default().page_size(500))
        .default_backoff()
        .filter_map(move |event| {
            let change = match event {
                Ok(watcher::Event::Init) => Some(Ok(Change::ListStart(kind))),
                Ok(watcher::Event::InitDone) => Some(Ok(Change::ListEnd(kind))),
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => lean(&o).map(|a| Ok(Change::Applied(a))),
                Ok(watcher::Event::Delete(o)) => o.meta().uid.clone().map(|uid| Ok(Change::Deleted(uid))),
                Err(e) => Some(Err(e)),
            };
            async move { change }
        })
        .boxed()
}

fn watches(client: &Client) -> BoxStream<'static, Result<Change, watcher::Error>> {
    stream::select_all([
        watch_kind::<core::Pod>(client, Kind::Pod),
        watch_kind::<apps::Deployment>(client, Kind::Deployment),
        watch_kind::<apps::DaemonSet>(client, Kind::DaemonSet),
        watch_kind::<apps::StatefulSet>(client, Kind::StatefulSet),
        watch_kind::<apps::ReplicaSet>(client, Kind::ReplicaSet),
        watch_kind::<batch::Job>(client, Kind::Job),
        watch_kind::<batch::CronJob>(client, Kind::CronJob),
        watch_kind::<core::Service>(client, Kind::Service),
        watch_kind::<core::Namespace>(client, Kind::Namespace),
        watch_kind::<core::Node>(client, Kind::Node),
        watch_kind::<core::ServiceAccount>(client, Kind::ServiceAccount),
        watch_kind::<rbac::Role>(client, Kind::Role),
        watch_kind::<rbac::ClusterRole>(client, Kind::ClusterRole),
        watch_kind::<rbac::RoleBinding>(client, Kind::RoleBinding),
        watch_kind::<rbac::ClusterRoleBinding>(client, Kind::ClusterRoleBinding),
    ])
    .boxed()
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Every hit of `query` on `index`, page by page (search_after on `sort`).
async fn all_hits(es: &Elastic, index: &str, query: Value, sort: &str, fields: &[&str]) -> Result<Vec<Value>> {
    let (mut hits, mut after) = (vec![], None::<Value>);
    loop {
        let mut body = json!({ "size": 1000, "_source": fields, "sort": [{ sort: "asc" }], "query": query });
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let page = es.ok(Method::POST, &format!("{index}/_search?ignore_unavailable=true"), Some(&body)).await?;
        let page: Vec<Value> = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return Ok(hits);
        }
        after = page.last().map(|h| h["sort"].clone());
        hits.extend(page.into_iter().map(|mut h| h["_source"].take()));
    }
}

/// Read back what the indices hold for this cluster, so a restarted
/// engine writes only what changed while it was away.
async fn restore(es: &Elastic, args: &Run, posture: &mut Posture, writes: &mut Vec<Write>) -> Result<(usize, usize)> {
    let cluster = json!({ "term": { "orchestrator.cluster.name": args.cluster_name } });
    let assets = all_hits(
        es,
        &args.index_inventory,
        json!({ "bool": { "filter": [cluster, { "term": { "event.dataset": "posture.inventory" } }, { "term": { "asset.state": "active" } }] } }),
        "asset.uid",
        &["asset.uid", "asset.kind", "asset.hash", "asset.first_seen"],
    )
    .await?;
    for a in &assets {
        let a = &a["asset"];
        let (Some(uid), Some(kind), Some(hash), Some(first)) = (
            a["uid"].as_str(),
            a["kind"].as_str().and_then(Kind::from_name),
            a["hash"].as_str(),
            a["first_seen"].as_str(),
        ) else {
            continue;
        };
        posture.restore_asset(uid, kind, u64::from_str_radix(hash, 16).unwrap_or(0), first);
    }
    let alerts = all_hits(
        es,
        &args.index_events,
        json!({ "bool": { "filter": [cluster, { "term": { "event.dataset": "posture.audit" } }, { "term": { "finding.status": "open" } }] } }),
        "finding.id",
        &["kubernetes.resource.uid", "rule.id", "container.name", "finding.first_seen", "posture.evidence_hash"],
    )
    .await?;
    for a in &alerts {
        let (Some(uid), Some(rule), Some(first)) = (
            a["kubernetes"]["resource"]["uid"].as_str(),
            a["rule"]["id"].as_str(),
            a["finding"]["first_seen"].as_str(),
        ) else {
            continue;
        };
        let evidence =
            a["posture"]["evidence_hash"].as_str().and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0);
        writes.extend(posture.restore_alert(uid, rule, a["container"]["name"].as_str(), first, evidence, &now()));
    }
    Ok((assets.len(), alerts.len()))
}

/// Send `writes`. A request that fails for a transient reason (network,
/// 429, 5xx) is retried until it goes through: the engine already counts
/// the writes as done, so nothing may be dropped. Documents rejected for
/// good (a mapping conflict, 4xx) are logged, and their assets forgotten
/// so the next event or list writes them again.
async fn flush(es: &Elastic, args: &Run, posture: &mut Posture, writes: &mut Vec<Write>) {
    if writes.is_empty() {
        return;
    }
    let index =
        |t: Target| if t == Target::Inventory { args.index_inventory.as_str() } else { args.index_events.as_str() };
    let batch: Vec<Write> = std::mem::take(writes);
    let ops: Vec<Operation> = batch
        .iter()
        .map(|w| match w {
            Write::Index { target, id, doc, .. } => Operation::index(index(*target), id, doc.clone()),
            Write::Update { target, id, doc, .. } => Operation::update(index(*target), id, doc.clone()),
        })
        .collect();
    let mut backoff = Duration::from_secs(1);
    loop {
        match bulk(es, ops.clone(), &BulkOptions::default()).await {
            Ok(report) => {
                for f in &report.failed {
                    tracing::error!(id = %f.id, status = f.status, "posture document rejected: {}", f.reason);
                    if let Some(w) = batch.iter().find(|w| w.id() == f.id) {
                        posture.invalidate(w.uid());
                    }
                }
                tracing::info!(documents = batch.len(), failed = report.failed.len(), "posture: written");
                return;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!("posture: writing {} documents: {e}; retrying in {}s", batch.len(), backoff.as_secs());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(
                    "posture: writing {} documents failed for good: {e}; their assets will be written again",
                    batch.len()
                );
                for w in &batch {
                    posture.invalidate(w.uid());
                }
                return;
            }
        }
    }
}

/// SIGINT or SIGTERM (the kubelet stopping the pod).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn watch(args: &Run, config: PostureConfig) -> Result<ExitCode> {
    let es = args.connection.client()?;
    let indices = Indices {
        inventory: Some(args.index_inventory.clone()),
        events: Some(args.index_events.clone()),
        vulnerabilities: None,
    };
    with_patience("posture", Duration::from_secs(300), || templates::install(&es, &indices)).await?;
    let client = Client::try_default().await.context("connecting to the API server")?;
    let mut posture = Posture::new(&args.cluster_name, config);
    let mut writes: Vec<Write> = vec![];
    let (assets, alerts) = restore(&es, args, &mut posture, &mut writes).await?;
    tracing::info!(assets, alerts, resolved = writes.len(), "posture: restored from the indices");

    let mut changes = watches(&client);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut pass = Pass::default();
    let mut tick = tokio::time::interval(Duration::from_millis(args.flush_millis.max(10)));
    loop {
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else { break };
                let now = now();
                match change {
                    Ok(Change::ListStart(kind)) => posture.begin_list(&[kind]),
                    Ok(Change::Applied(asset)) => posture.apply(&asset, &now, &mut writes, &mut pass),
                    Ok(Change::Deleted(uid)) => posture.delete(&uid, &now, &mut writes, &mut pass),
                    Ok(Change::ListEnd(kind)) => {
                        posture.end_list(&[kind], &now, &mut writes, &mut pass);
                        // Counts since the previous list completed.
                        tracing::info!(kind = kind.name(), seen = pass.seen, unchanged = pass.unchanged, created = pass.created, changed = pass.changed, deleted = pass.deleted, alerts_opened = pass.alerts_opened, alerts_resolved = pass.alerts_resolved, "posture: list complete");
                        pass = Pass::default();
                    }
                    Err(e) => tracing::warn!("posture: watch: {e}"),
                }
                if writes.len() >= 1000 {
                    flush(&es, args, &mut posture, &mut writes).await;
                }
            }
            _ = tick.tick() => flush(&es, args, &mut posture, &mut writes).await,
            _ = &mut shutdown => break,
        }
    }
    flush(&es, args, &mut posture, &mut writes).await;
    Ok(ExitCode::SUCCESS)
}
