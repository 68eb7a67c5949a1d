//! Scale benchmark of the posture engine (issue #6): a synthetic cluster
//! of 100k pods with owners (90% run by 1,000 Deployments through their
//! ReplicaSets, 10% standalone, 1 in 50 of those risky), 200 namespaces.
//!
//! Prints, side by side in one run:
//! - parse: Kubernetes JSON → lean assets, one object at a time;
//! - pass 1: full audit + diff from an empty state (every asset written);
//! - pass 2: the unchanged resync (dirty checking: 0 documents);
//! - pass 3: 1% of the pods relabelled (~1% of the documents);
//! - naive: the seed plan's saveAll (docs/seed-deviations.md, posture engine), every asset and alert rewritten each pass;
//! - peak RSS of the process (VmHWM).

use std::time::{Duration, Instant};

use secop_posture::model::{Asset, Kind, parse};
use secop_posture::{Posture, PostureConfig};
use serde_json::{Value, json};

const PODS: usize = 100_000;
const DEPLOYMENTS: usize = 1_000;
const NAMESPACES: usize = 200;

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn container(i: usize, risky: bool) -> Value {
    let security = if risky {
        json!({ "privileged": true, "runAsUser": 0 })
    } else {
        json!({ "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] }, "runAsUser": 10001 })
    };
    json!({
        "name": "app", "image": format!("registry.example/team-{}/svc:{}.{}", i % 50, i % 7, i % 13),
        "ports": [{ "containerPort": 8080, "protocol": "TCP" }],
        "env": [{ "name": "MODE", "value": "prod" }, { "name": "REGION", "value": "eu-1" }],
        "resources": { "requests": { "cpu": "100m", "memory": "128Mi" } },
        "securityContext": security,
        "volumeMounts": [{ "name": "config", "mountPath": "/etc/app" }, { "name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount" }],
    })
}

fn pod(i: usize, generation: usize) -> Value {
    let ns = format!("ns-{}", i % NAMESPACES);
    let standalone = i.is_multiple_of(10);
    let risky = standalone && i.is_multiple_of(500);
    let deployment = i % DEPLOYMENTS;
    let mut meta = json!({
        "name": format!("pod-{i}"), "namespace": if risky { "default".to_string() } else { ns }, "uid": format!("00000000-0000-0000-0000-{i:012}"),
        "resourceVersion": format!("{}", 1000 + i + generation), "creationTimestamp": "2026-11-01T00:00:00Z",
        "labels": { "app": format!("app-{deployment}"), "pod-template-hash": "6d8f9c", "generation": generation.to_string() },
        "managedFields": [{ "manager": "kube-controller-manager", "operation": "Update", "fieldsV1": { "f:metadata": { "f:labels": {} } } }],
    });
    if !standalone {
        meta["ownerReferences"] = json!([{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{deployment}-6d8f9c"), "uid": format!("rs-{deployment}"), "controller": true }]);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {
            "nodeName": format!("node-{}", i % 500), "serviceAccountName": "default",
            "securityContext": { "runAsNonRoot": !risky, "seccompProfile": { "type": "RuntimeDefault" } },
            "volumes": [{ "name": "config", "configMap": { "name": "app" } }, { "name": "kube-api-access", "projected": { "sources": [] } }],
            "containers": [container(i, risky)],
        },
        "status": { "phase": "Running", "podIP": "10.0.0.1", "conditions": [{ "type": "Ready", "status": "True" }] },
    })
}

fn workloads() -> Vec<Value> {
    let mut objects = vec![];
    for n in 0..NAMESPACES {
        objects.push(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": format!("ns-{n}"), "uid": format!("ns-{n}") } }));
    }
    for d in 0..DEPLOYMENTS {
        let template = json!({ "metadata": { "labels": { "app": format!("app-{d}") } }, "spec": { "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } }, "containers": [container(d, false)] } });
        let ns = format!("ns-{}", d % NAMESPACES);
        objects.push(json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": format!("app-{d}"), "namespace": ns, "uid": format!("deploy-{d}") }, "spec": { "replicas": 90, "template": template } }));
        objects.push(json!({ "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": { "name": format!("app-{d}-6d8f9c"), "namespace": ns, "uid": format!("rs-{d}"),
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment", "name": format!("app-{d}"), "controller": true }] }, "spec": { "template": template } }));
    }
    objects
}

/// One pass over the synthetic cluster, streamed as a watch re-list
/// delivers it: each object is generated, parsed to its lean form, applied
/// and dropped; writes are serialized into bulk bodies of `BATCH` documents
/// and dropped, as the Elasticsearch writer does. Pods with index % 100 == 0
/// carry `generation` in a label (the 1% change).
struct PassFigures {
    time: Duration,
    /// In the engine: hashing, audits, diff, building documents.
    engine: Duration,
    /// Serializing the documents into bulk bodies.
    serialize: Duration,
    documents: usize,
    bytes: usize,
    alerts_opened: usize,
}

const BATCH: usize = 5_000;

fn stream(posture: &mut Posture, generation: usize, now: &str) -> PassFigures {
    let began = Instant::now();
    let (mut writes, mut pass) = (Vec::with_capacity(BATCH), secop_posture::Pass::default());
    let (mut documents, mut bytes) = (0, 0);
    let (mut engine, mut serialize) = (Duration::ZERO, Duration::ZERO);
    let mut flush = |writes: &mut Vec<secop_posture::Write>| {
        let began = Instant::now();
        documents += writes.len();
        for w in writes.drain(..) {
            let (secop_posture::Write::Index { doc, .. } | secop_posture::Write::Update { doc, .. }) = w;
            bytes += serde_json::to_vec(&doc).map(|v| v.len()).unwrap_or(0);
        }
        serialize += began.elapsed();
    };
    posture.begin_list(&Kind::ALL);
    let objects = workloads().into_iter().chain((0..PODS).map(|i| pod(i, if i % 100 == 0 { generation } else { 0 })));
    for object in objects {
        let asset: Asset = parse(&object).expect("an object parses");
        drop(object);
        let began = Instant::now();
        posture.apply(&asset, now, &mut writes, &mut pass);
        engine += began.elapsed();
        if writes.len() >= BATCH {
            flush(&mut writes);
        }
    }
    let ended = Instant::now();
    posture.end_list(&Kind::ALL, now, &mut writes, &mut pass);
    engine += ended.elapsed();
    flush(&mut writes);
    PassFigures { time: began.elapsed(), engine, serialize, documents, bytes, alerts_opened: pass.alerts_opened }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // Generating + parsing alone, to tell the engine's share apart.
    let began = Instant::now();
    let total = workloads().into_iter().chain((0..PODS).map(|i| pod(i, 0))).filter_map(|o| parse(&o)).count();
    let parse_only = began.elapsed();

    let mut posture = Posture::new("bench", PostureConfig::default());
    let p1 = stream(&mut posture, 0, "2026-11-24T00:00:00Z");
    let p2 = stream(&mut posture, 0, "2026-11-24T00:05:00Z");
    let p3 = stream(&mut posture, 1, "2026-11-24T00:10:00Z");
    // saveAll: no memory of what was written, so everything every pass.
    let naive = stream(&mut Posture::new("bench", PostureConfig::default()), 1, "2026-11-24T00:10:00Z");
    let peak = rss_kib("VmHWM:");

    println!(
        "posture engine, synthetic cluster: {PODS} pods ({} with owners), {DEPLOYMENTS} Deployments + ReplicaSets, {NAMESPACES} namespaces = {total} assets",
        PODS * 9 / 10
    );
    println!(
        "each pass streams the objects as a re-list delivers them (generate JSON → lean parse → engine → bulk body of {BATCH});"
    );
    println!("generating the synthetic JSON + lean parsing alone: {} per pass (the rest of `total`)", ms(parse_only));
    println!("open alerts after pass 1: {}, tracked assets: {}", p1.alerts_opened, posture.tracked());
    println!();
    println!("| pass | total | audit + diff (engine) | bulk serialization | documents written | bulk bytes |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, p: &PassFigures| {
        println!(
            "| {name} | {} | {} | {} | {} ({:.2}%) | {:.2} MiB |",
            ms(p.time),
            ms(p.engine),
            ms(p.serialize),
            p.documents,
            p.documents as f64 * 100.0 / total as f64,
            p.bytes as f64 / 1048576.0
        )
    };
    row("1: full audit + diff (empty state)", &p1);
    row("2: unchanged resync", &p2);
    row("3: 1% of pods changed", &p3);
    row("naive saveAll (same change)", &naive);
    println!();
    println!(
        "dirty checking vs saveAll on the 1% change: {:.0}x fewer documents, {:.0}x fewer bytes",
        naive.documents as f64 / p3.documents.max(1) as f64,
        naive.bytes as f64 / p3.bytes.max(1) as f64
    );
    println!(
        "peak RSS (VmHWM): {} MiB (target ≤ 500 MiB); full audit + diff of pass 1: {} (target ≤ 2 s)",
        peak / 1024,
        ms(p1.engine)
    );
}
