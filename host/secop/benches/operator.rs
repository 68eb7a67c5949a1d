//! Operator benchmark on the real test control plane (`cargo xtask bench`
//! brings it up): time from a spec change to all objects applied and the
//! status written (observedGeneration caught up), over 20 changes, and the
//! operator's memory with five features loaded. Prints figures only.

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use secop_api::SecurityAgent;
use serde_json::json;

mod common;

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn observed(api: &Api<SecurityAgent>, generation: i64) -> bool {
    let agent = api.get("poc-security").await.unwrap();
    agent.status.and_then(|s| s.observed_generation) == Some(generation)
}

#[tokio::main]
async fn main() {
    let Some(kubeconfig) = std::env::var_os("SECOP_E2E_KUBECONFIG") else {
        eprintln!("operator benchmark needs the test control plane: run `cargo xtask bench`");
        return;
    };
    let operator_kubeconfig = std::env::var_os("SECOP_E2E_OPERATOR_KUBECONFIG").unwrap();
    let ns = format!("bench-{}", std::process::id());
    let client = common::cluster_with_namespace(&kubeconfig, &ns).await;

    let mut operator = common::start_operator(&operator_kubeconfig, &ns, &[], "secop-bench-operator-cache");

    let api: Api<SecurityAgent> = Api::namespaced(client.clone(), &ns);
    let mut agent = common::sample_agent(&ns);
    let applied = api.patch("poc-security", &PatchParams::apply("bench").force(), &Patch::Apply(&agent)).await.unwrap();
    let generation = applied.metadata.generation.unwrap();
    let start = Instant::now();
    while !observed(&api, generation).await {
        assert!(start.elapsed() < Duration::from_secs(120), "first reconcile did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = start.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut samples = vec![];
    for i in 0..20 {
        agent["spec"]["override"]["falco"]["resources"]["limits"]["memory"] = json!(format!("{}Mi", 2048 + i + 1));
        let start = Instant::now();
        let applied =
            api.patch("poc-security", &PatchParams::apply("bench").force(), &Patch::Apply(&agent)).await.unwrap();
        let generation = applied.metadata.generation.unwrap();
        while !observed(&api, generation).await {
            assert!(start.elapsed() < Duration::from_secs(60), "change {i} not reconciled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let pid = operator.id();
    println!("operator on the test control plane (kube-apiserver v1.34, 3 kwok nodes), full sample, 5 features");
    println!("  first reconcile (49 objects created, status written)   {:>8.1} ms", first.as_secs_f64() * 1e3);
    println!("  spec change -> applied + status written, 20 changes:");
    println!(
        "    p50 {:>8.1} ms   p95 {:>8.1} ms   max {:>8.1} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.95).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "  operator memory: RSS {} MiB, peak RSS {} MiB",
        rss_kib(pid, "VmRSS:") / 1024,
        rss_kib(pid, "VmHWM:") / 1024
    );

    api.delete("poc-security", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = operator.kill();
    let _ = operator.wait();
}
