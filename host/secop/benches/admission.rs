//! Admission latency on the real test control plane (`cargo xtask bench
//! admission` brings it up): server-side dry-run writes of a SecurityAgent
//! through kube-apiserver, which calls the operator's webhook (the e2e
//! release's ValidatingWebhookConfiguration points at the operator
//! process), against the same writes with the webhook down (failurePolicy
//! Ignore: the API server's own cost plus a refused connection). Prints
//! p50/p95 and the ratio; no assertion on time.

use std::process::Child;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use secop_api::SecurityAgent;
use serde_json::{Value, json};

mod common;

const SAMPLES: usize = 40;

/// The operator, serving the webhook at `addr` for the e2e release's
/// configuration when `webhook` is given.
fn operator(kubeconfig: &std::ffi::OsStr, namespace: &str, webhook: Option<(&str, &str)>) -> Child {
    let args: Vec<String> = match webhook {
        Some((addr, release)) => vec![
            format!("--webhook-addr={addr}"),
            format!("--webhook-host={}", addr.split(':').next().unwrap()),
            format!("--webhook-config={release}"),
            format!("--webhook-secret={release}-webhook-tls"),
            format!("--lease-namespace={release}"),
        ],
        None => vec![],
    };
    common::start_operator(kubeconfig, namespace, &args, "secop-bench-admission-cache")
}

/// p50 and p95 of `samples`, in ms.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.95))
}

/// Dry-run creates of a new agent (every feature rendered) and dry-run
/// updates of the applied one that change one feature's config (the
/// others from the operator's memo).
async fn measure(api: &Api<SecurityAgent>, agent: &Value) -> (Vec<Duration>, Vec<Duration>) {
    let mut creates = vec![];
    let mut new_agent = agent.clone();
    new_agent["metadata"]["name"] = json!("new-agent");
    let new_agent: SecurityAgent = serde_json::from_value(new_agent).unwrap();
    for _ in 0..SAMPLES {
        let start = Instant::now();
        api.create(&PostParams { dry_run: true, ..Default::default() }, &new_agent).await.unwrap();
        creates.push(start.elapsed());
    }
    let mut updates = vec![];
    let mut changed = agent.clone();
    for i in 0..SAMPLES {
        changed["spec"]["features"][1]["config"]["minimumPriority"] =
            json!(if i % 2 == 0 { "warning" } else { "notice" });
        let start = Instant::now();
        api.patch("poc-security", &PatchParams::apply("bench").force().dry_run(), &Patch::Apply(&changed))
            .await
            .unwrap();
        updates.push(start.elapsed());
    }
    (creates, updates)
}

#[tokio::main]
async fn main() {
    let Some(kubeconfig) = std::env::var_os("SECOP_E2E_KUBECONFIG") else {
        eprintln!("admission benchmark needs the test control plane: run `cargo xtask bench admission`");
        return;
    };
    let operator_kubeconfig = std::env::var_os("SECOP_E2E_OPERATOR_KUBECONFIG").unwrap();
    let webhook_addr = std::env::var("SECOP_E2E_WEBHOOK_ADDR").unwrap();
    let release = std::env::var("SECOP_E2E_OPERATOR_NAMESPACE").unwrap();
    let ns = format!("bench-admission-{}", std::process::id());
    let client = common::cluster_with_namespace(&kubeconfig, &ns).await;
    let api: Api<SecurityAgent> = Api::namespaced(client.clone(), &ns);
    let agent = common::sample_agent(&ns);
    assert_eq!(agent["spec"]["features"][1]["name"], "falco", "the sample's second feature is falco");

    let mut with_webhook = operator(&operator_kubeconfig, &ns, Some((&webhook_addr, &release)));
    // Serving once a wrong config is refused.
    let mut wrong = agent.clone();
    wrong["metadata"]["name"] = json!("wrong");
    wrong["spec"]["features"][1]["config"]["driver"] = json!("kmod");
    let wrong: SecurityAgent = serde_json::from_value(wrong).unwrap();
    let start = Instant::now();
    while api.create(&PostParams { dry_run: true, ..Default::default() }, &wrong).await.is_ok() {
        assert!(start.elapsed() < Duration::from_secs(90), "the webhook did not start refusing");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The agent applied and reconciled: the memo holds its outputs.
    api.patch("poc-security", &PatchParams::apply("bench").force(), &Patch::Apply(&agent)).await.unwrap();
    let start = Instant::now();
    while api.get("poc-security").await.unwrap().status.and_then(|s| s.observed_generation).is_none() {
        assert!(start.elapsed() < Duration::from_secs(120), "first reconcile did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (creates, updates) = measure(&api, &agent).await;
    let _ = with_webhook.kill();
    let _ = with_webhook.wait();
    let (base_creates, base_updates) = measure(&api, &agent).await;

    let (create_p50, create_p95) = percentiles(creates);
    let (update_p50, update_p95) = percentiles(updates);
    let (base_create_p50, base_create_p95) = percentiles(base_creates);
    let (base_update_p50, base_update_p95) = percentiles(base_updates);
    println!("admission through kube-apiserver v1.34 (server-side dry runs, {SAMPLES} each), full sample agent");
    println!("                                        p50 ms    p95 ms   p50 ratio");
    println!(
        "  create, webhook (every feature)     {create_p50:>8.1}  {create_p95:>8.1}   {:>6.2}x",
        create_p50 / base_create_p50
    );
    println!("  create, webhook down (Ignore)       {base_create_p50:>8.1}  {base_create_p95:>8.1}");
    println!(
        "  update of falco's config, webhook   {update_p50:>8.1}  {update_p95:>8.1}   {:>6.2}x",
        update_p50 / base_update_p50
    );
    println!("  update, webhook down (Ignore)       {base_update_p50:>8.1}  {base_update_p95:>8.1}");

    let mut cleanup = operator(&operator_kubeconfig, &ns, None);
    api.delete("poc-security", &DeleteParams::default()).await.unwrap();
    let start = Instant::now();
    while api.get_opt("poc-security").await.unwrap().is_some() && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = cleanup.kill();
    let _ = cleanup.wait();
    let _ = Api::<Namespace>::all(client).delete(&ns, &DeleteParams::default()).await;
}
