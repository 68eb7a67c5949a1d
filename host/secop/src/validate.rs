//! `secop validate`: the checking half of continuous CTEM validation
//! (`spec.tests`). The validation Job's first container performs the
//! scenarios' behaviour in its own pod; this command, in the Job's second
//! container, then waits until every enabled tool's detection of each
//! scenario has arrived for that pod, and records the outcome: one document
//! per scenario in the events index, and `status.validation` of the agent
//! (server-side apply as field manager `secop-validation`, which owns that
//! field and nothing else). A scenario whose detection did not arrive is
//! `Failed` with the missing tools named: no finding must never look
//! healthy.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;
use kube::api::{Api, Patch, PatchParams};
use secop_api::{ScenarioOutcome, ScenarioResult, SecurityAgent, VALIDATION_SCENARIOS, ValidationStatus};
use secop_elastic::ctem::{self, Signal};
use secop_elastic::{Elastic, Method};
use serde_json::{Value, json};

use crate::output::Connection;

/// The field manager that owns `status.validation`.
const FIELD_MANAGER: &str = "secop-validation";

#[derive(Args, Debug)]
pub struct Validate {
    #[command(flatten)]
    connection: Connection,
    #[arg(long, default_value = "security-events")]
    index_events: String,
    #[arg(long, default_value = "security-inventory")]
    index_inventory: String,
    /// The pod that performed the scenarios (its detections name it).
    #[arg(long, env = "POD_NAME")]
    pod: String,
    /// Scenarios to check (default: every one).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(VALIDATION_SCENARIOS.iter().copied()))]
    scenarios: Vec<String>,
    /// The agent (`namespace/name`) whose `status.validation` is written
    /// and whose enabled features say which tools must detect; without it,
    /// every tool of a scenario must.
    #[arg(long)]
    agent: Option<String>,
    /// How long to wait for the detections to arrive.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
    /// Only detections since (Elasticsearch date or date math).
    #[arg(long, default_value = "now-30m")]
    since: String,
    /// Only inventory documents since: osquery's snapshots run hourly.
    #[arg(long, default_value = "now-2h")]
    inventory_since: String,
    /// `orchestrator.cluster.name` of the result documents.
    #[arg(long, default_value = "")]
    cluster_name: String,
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

/// A scenario of the run and the signals it waits for.
struct Expected {
    name: &'static str,
    scenario: &'static ctem::Scenario,
    signals: Vec<Signal>,
}

pub fn validate(args: &Validate) -> Result<ExitCode> {
    let es = args.connection.client()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let agent = match &args.agent {
            Some(id) => Some(read_agent(id).await?),
            None => None,
        };
        let expected = expected_signals(args, agent.as_ref().map(|(_, a)| a))?;
        let now = || Some(k8s_openapi::jiff::Timestamp::now().to_string());
        let status = match wait_for_detections(&es, args, &expected).await {
            Ok(results) => {
                ValidationStatus { last_run: now(), pod: Some(args.pod.clone()), error: None, scenarios: results }
            }
            Err(e) => {
                // A run that could not check must not leave the last good
                // result standing: the agent says why instead.
                let failed = ValidationStatus {
                    last_run: now(),
                    pod: Some(args.pod.clone()),
                    error: Some(format!("{e:#}")),
                    scenarios: vec![],
                };
                if let Some((api, agent)) = &agent {
                    record_status(api, agent, &failed).await?;
                }
                return Err(e.context("checking the detections"));
            }
        };
        record_documents(&es, args, &status).await?;
        if let Some((api, agent)) = &agent {
            record_status(api, agent, &status).await?;
        }
        if args.output == "json" {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            for r in &status.scenarios {
                let missing =
                    if r.missing.is_empty() { String::new() } else { format!("; missing: {}", r.missing.join(", ")) };
                println!(
                    "{:<7} {:<28} detected by: {}{missing}",
                    r.result,
                    r.name,
                    if r.detected_by.is_empty() { "nobody".into() } else { r.detected_by.join(", ") }
                );
            }
        }
        // The run succeeded in checking; failed scenarios are its findings.
        Ok(ExitCode::SUCCESS)
    })
}

async fn read_agent(id: &str) -> Result<(Api<SecurityAgent>, SecurityAgent)> {
    let (namespace, name) = id.split_once('/').with_context(|| format!("--agent `{id}`: expected namespace/name"))?;
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let api: Api<SecurityAgent> = Api::namespaced(client, namespace);
    let agent = api.get(name).await.with_context(|| format!("reading SecurityAgent {id}"))?;
    Ok((api, agent))
}

/// Per selected scenario, the signals of the tools that must see it: the
/// scenario's signals (host/elastic/src/ctem.rs), limited to the tools the
/// agent enables.
fn expected_signals(args: &Validate, agent: Option<&SecurityAgent>) -> Result<Vec<Expected>> {
    let enabled: Option<BTreeSet<&str>> =
        agent.map(|a| a.spec.features.iter().filter(|f| f.enabled).map(|f| f.name.as_str()).collect());
    let names: Vec<&str> = if args.scenarios.is_empty() {
        VALIDATION_SCENARIOS.to_vec()
    } else {
        args.scenarios.iter().map(String::as_str).collect()
    };
    names
        .into_iter()
        .map(|name| {
            let scenario = ctem::scenario(name).with_context(|| format!("no scenario `{name}`"))?;
            let name = scenario.id;
            let signals = scenario
                .signals
                .iter()
                .copied()
                .filter(|s| enabled.as_ref().is_none_or(|e| e.contains(s.tool())))
                .collect();
            Ok(Expected { name, scenario, signals })
        })
        .collect()
}

/// Poll until every expected signal has a document, or the timeout.
async fn wait_for_detections(es: &Elastic, args: &Validate, expected: &[Expected]) -> Result<Vec<ScenarioResult>> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    loop {
        let mut results = vec![];
        for e in expected {
            // Runtime detections must name the pod that ran the scenarios;
            // the inventory is the node's, whoever asked.
            let (index, subject, since) = match e.scenario.index {
                ctem::IndexRole::Inventory => (&args.index_inventory, None, &args.inventory_since),
                ctem::IndexRole::Events => (&args.index_events, Some(args.pod.as_str()), &args.since),
            };
            let mut detected_by = BTreeSet::new();
            let mut missing = BTreeSet::new();
            for signal in &e.signals {
                if detections(es, index, *signal, subject, since).await? > 0 {
                    detected_by.insert(signal.tool().to_string());
                } else {
                    missing.insert(signal.tool().to_string());
                }
            }
            // A tool with two signals (Falco's token rule or API rule) saw
            // the scenario if any of them arrived.
            missing.retain(|t| !detected_by.contains(t));
            let passed = missing.is_empty() && !detected_by.is_empty();
            results.push(ScenarioResult {
                name: e.name.to_string(),
                result: ScenarioOutcome::passed(passed),
                detected_by: detected_by.into_iter().collect(),
                missing: missing.into_iter().collect(),
            });
        }
        if results.iter().all(|r| r.result == ScenarioOutcome::Passed) || Instant::now() >= deadline {
            return Ok(results);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn detections(es: &Elastic, index: &str, signal: Signal, pod: Option<&str>, since: &str) -> Result<u64> {
    let mut filters = vec![signal.query(), json!({ "range": { "@timestamp": { "gte": since } } })];
    if let Some(pod) = pod {
        filters.push(json!({ "term": { "kubernetes.pod.name": pod } }));
    }
    let body = json!({ "query": { "bool": { "filter": filters } } });
    let answer = es.ok(Method::POST, &format!("{index}/_count?ignore_unavailable=true"), Some(&body)).await?;
    Ok(answer["count"].as_u64().unwrap_or(0))
}

/// One document per scenario in the events index, where the detections
/// themselves are: a validation run is evidence like any alert.
async fn record_documents(es: &Elastic, args: &Validate, status: &ValidationStatus) -> Result<()> {
    for r in &status.scenarios {
        let passed = r.result == ScenarioOutcome::Passed;
        let doc = json!({
            "@timestamp": status.last_run,
            "labels": { "security_tool": "ctem-validation" },
            "event": { "kind": "state", "dataset": "ctem-validation", "outcome": if passed { "success" } else { "failure" }, "severity": if passed { 1 } else { 3 } },
            "orchestrator": { "cluster": { "name": args.cluster_name } },
            "rule": { "name": r.name, "ruleset": "ctem-validation" },
            "message": if passed {
                format!("{}: detected by {}", r.name, r.detected_by.join(", "))
            } else {
                format!("{}: no detection from {} for pod {}", r.name, r.missing.join(", "), args.pod)
            },
            "ctem": { "validation": { "pod": args.pod, "result": r.result, "detected_by": r.detected_by, "missing": r.missing } },
        });
        es.ok(Method::POST, &format!("{}/_doc?refresh=wait_for", args.index_events), Some(&doc))
            .await
            .with_context(|| format!("writing the result of {}", r.name))?;
    }
    Ok(())
}

/// `status.validation`, owned by this field manager alone.
async fn record_status(api: &Api<SecurityAgent>, agent: &SecurityAgent, status: &ValidationStatus) -> Result<()> {
    let name = agent.metadata.name.clone().unwrap_or_default();
    let patch: Value = json!({
        "apiVersion": "security.example.io/v1alpha1",
        "kind": "SecurityAgent",
        "status": { "validation": status },
    });
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .with_context(|| format!("writing status.validation of {name}"))?;
    Ok(())
}
