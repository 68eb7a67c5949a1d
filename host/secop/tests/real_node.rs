//! The user's own path on a real node: `helm install` of the chart, the
//! operator as two pods under the chart's ServiceAccount (in-cluster
//! config, leader election), the full sample reconciled, and every pod the
//! rendered workloads create started by a real kubelet (containerd, runc,
//! bridge CNI; xtask/src/node.rs) with the sensor stand-ins in place of the
//! sensors' images (test/standins).
//!
//! Started by `cargo xtask test`; fails without the real node when CI=true,
//! skips otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/forger.rs"]
mod forger;
use cluster::{
    agent_status, apply_agent, client, condition, create_namespace, kubectl_apply_until_refused, live_objects,
    live_objects_of, repo, tenant_kubeconfig, wait_for, wait_ready,
};
use secop_api::SecurityAgent;

const OPERATOR_NAMESPACE: &str = "secop-system";
const RELEASE: &str = "secop";
const AGENT_NAMESPACE: &str = "security-system";

struct Env {
    kubeconfig: PathBuf,
    helm: PathBuf,
    kubectl: PathBuf,
    es_home: PathBuf,
    node: String,
    node_ip: String,
    taint: String,
    images: BTreeMap<String, String>,
}

fn env() -> Option<Env> {
    let Some(node) = std::env::var_os("SECOP_NODE_NAME") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI expects the real node: run the suite with `cargo xtask test` as root (SECOP_NODE_NAME is not set)"
            );
        }
        eprintln!("skipping the real-node test: no real node (run `cargo xtask test` as root)");
        return None;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} (cargo xtask test sets it)"));
    let images =
        std::env::vars().filter_map(|(k, v)| Some((k.strip_prefix("SECOP_NODE_IMAGE_")?.to_string(), v))).collect();
    Some(Env {
        kubeconfig: var("SECOP_E2E_KUBECONFIG").into(),
        helm: var("SECOP_HELM").into(),
        kubectl: var("SECOP_KUBECTL").into(),
        es_home: var("SECOP_ES_HOME").into(),
        node: node.to_string_lossy().into_owned(),
        node_ip: var("SECOP_NODE_IP"),
        taint: var("SECOP_NODE_TAINT"),
        images,
    })
}

impl Env {
    fn image(&self, name: &str) -> &str {
        self.images.get(name).unwrap_or_else(|| panic!("SECOP_NODE_IMAGE_{name} (cargo xtask test sets it)"))
    }

    /// Placement on the real node: its label, and its taint tolerated.
    fn placement(&self) -> Value {
        json!({
            "nodeSelector": { "secop.example.io/node": "real" },
            "tolerations": [ { "key": self.taint, "operator": "Exists", "effect": "NoSchedule" } ],
        })
    }
}

fn helm(env: &Env, args: &[&str]) -> String {
    let out = Command::new(&env.helm).args(args).env("KUBECONFIG", &env.kubeconfig).output().unwrap();
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The full sample for this cluster: sensor stand-ins by image override,
/// the collector image built here, everything placed on the real node, and
/// this test's Elasticsearch (reachable from pods at the node address).
fn agent(env: &Env, es_url: &str) -> Value {
    let mut agent: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("deploy/samples/securityagent_full.yaml")).unwrap())
            .unwrap();
    let spec = &mut agent["spec"];
    spec["output"]["elasticsearch"] = json!({ "endpoints": [es_url] });
    for feature in spec["features"].as_array_mut().unwrap() {
        if feature["name"] == "tetragon" {
            feature["config"]["exportImage"] = json!(env.image("TETRAGON_EXPORT"));
        }
        // The test machines lack CAP_SYS_RESOURCE in their bounding set, so
        // no container can be granted it, and Falco's least-privileged set
        // includes it: Falco runs privileged here (README, "The real node").
        if feature["name"] == "falco" {
            feature["config"]["leastPrivileged"] = json!(false);
        }
    }
    let placement = env.placement();
    let with_placement = |extra: Value| {
        let mut o = placement.clone();
        o.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        o
    };
    let falco_resources = spec["override"]["falco"]["resources"].clone();
    spec["override"] = json!({
        "nodeAgent": placement,
        "falco": { "image": env.image("FALCO"), "resources": falco_resources },
        "tetragon": { "image": env.image("TETRAGON") },
        "osquery": { "image": env.image("OSQUERY") },
        "otelNode": { "image": env.image("OTELCOL") },
        "otelGateway": with_placement(json!({ "image": env.image("OTELCOL") })),
        "trivyOperator": with_placement(json!({ "image": env.image("TRIVY_OPERATOR") })),
        "trivyEsSync": placement,
        "posture": placement,
        "ctemValidation": placement,
    });
    // The validation pod performs the scenarios with the cluster's busybox;
    // the test starts its Job itself, so the schedule never comes (31
    // February): a run at the top of an hour would race it.
    spec["tests"]["image"] = json!(env.image("BUSYBOX"));
    spec["tests"]["schedule"] = json!("0 0 31 2 *");
    agent
}

/// Why a pod is not Running and Ready: its containers' states and the
/// kubelet's Events about it.
async fn pod_trouble(client: &Client, pod: &Pod) -> String {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut lines = vec![format!(
        "pod {namespace}/{name}: phase {:?} on {:?}",
        status.phase,
        pod.spec.as_ref().and_then(|s| s.node_name.clone())
    )];
    for c in status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten()) {
        lines.push(format!(
            "  container {}: ready {} restarts {} state {}",
            c.name,
            c.ready,
            c.restart_count,
            serde_json::to_string(&c.state).unwrap_or_default()
        ));
    }
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Ok(list) = events.list(&ListParams::default().fields(&format!("involvedObject.name={name}"))).await {
        for e in list.items {
            lines.push(format!(
                "  event {} {}: {}",
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            ));
        }
    }
    lines.join("\n")
}

fn running_and_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}

/// Pods selected by `labels` (a label selector) in `namespace`.
async fn pods(client: &Client, namespace: &str, labels: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default().labels(labels))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn selector(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Every DaemonSet and Deployment of `namespace` with its pod selector.
async fn workloads(client: &Client, namespace: &str) -> Vec<(String, String)> {
    let mut found = vec![];
    for ds in Api::<DaemonSet>::namespaced(client.clone(), namespace).list(&ListParams::default()).await.unwrap() {
        let labels = ds.spec.unwrap().selector.match_labels.unwrap_or_default();
        found.push((format!("DaemonSet/{}", ds.metadata.name.unwrap()), selector(&labels)));
    }
    for d in Api::<Deployment>::namespaced(client.clone(), namespace).list(&ListParams::default()).await.unwrap() {
        let labels = d.spec.unwrap().selector.match_labels.unwrap_or_default();
        found.push((format!("Deployment/{}", d.metadata.name.unwrap()), selector(&labels)));
    }
    found
}

/// Wait until every pod of every workload in `namespace` runs Ready on the
/// real node; print the table; on time-out fail with the kubelet's word.
async fn wait_all_running(
    client: &Client,
    env: &Env,
    namespace: &str,
    timeout: Duration,
) -> Vec<(String, String, String)> {
    let start = Instant::now();
    loop {
        let mut table = vec![];
        let mut trouble = vec![];
        for (workload, labels) in workloads(client, namespace).await {
            let found = pods(client, namespace, &labels).await;
            if found.is_empty() {
                trouble.push(format!("{workload}: no pods yet"));
            }
            for pod in found {
                let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                table.push((
                    workload.clone(),
                    pod.metadata.name.clone().unwrap_or_default(),
                    format!("{phase} on {node}"),
                ));
                if node != env.node || !running_and_ready(&pod) {
                    trouble.push(pod_trouble(client, &pod).await);
                }
            }
        }
        if trouble.is_empty() && !table.is_empty() {
            for (workload, pod, state) in &table {
                eprintln!("{workload:32} {pod:48} {state} (Ready)");
            }
            return table;
        }
        if start.elapsed() > timeout {
            panic!(
                "not every workload's pods are Running and Ready on {} after {timeout:?}:\n{}",
                env.node,
                trouble.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn uids(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().filter_map(|p| p.metadata.uid.clone()).collect()
}

/// New pods (not `before`) of `labels`, all Running and Ready.
async fn wait_rolled(client: &Client, labels: &str, before: &BTreeSet<String>, what: &str) {
    wait_for(what, Duration::from_secs(180), || async {
        let now = pods(client, AGENT_NAMESPACE, labels).await;
        let fresh =
            !now.is_empty() && now.iter().all(|p| !before.contains(p.metadata.uid.as_deref().unwrap_or_default()));
        Ok(fresh && now.iter().all(running_and_ready))
    })
    .await;
}

/// Memory of the operator containers, from the kernel: (cgroup usage, the
/// cgroup's peak, the process's peak RSS) in MiB, per `secop run` process
/// in a container cgroup (cgroup v1 memory controller, as on these nodes).
fn operator_memory() -> Vec<(u32, f64, f64, f64)> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.starts_with(b"secop\0run\0") {
            continue;
        }
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let Some(path) =
            cgroups.lines().find_map(|l| l.split(':').nth(2).filter(|_| l.split(':').nth(1) == Some("memory")))
        else {
            continue;
        };
        if path == "/" {
            continue;
        }
        let mib = |file: &str| {
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/{file}"))
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1048576.0
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0;
        found.push((pid, mib("memory.usage_in_bytes"), mib("memory.max_usage_in_bytes"), hwm));
    }
    found
}

async fn operator_pods(client: &Client) -> Vec<Pod> {
    pods(
        client,
        OPERATOR_NAMESPACE,
        &format!("app.kubernetes.io/name=security-operator,app.kubernetes.io/instance={RELEASE}"),
    )
    .await
}

/// test/scenarios/pods.yaml for this node: the busybox image from the
/// cluster's registry for every container (sleeping, as busybox has no
/// server to run), placed on the real node.
fn scenario_pods(env: &Env, out: &Path) {
    let text = std::fs::read_to_string(repo("test/scenarios/pods.yaml")).unwrap();
    let mut docs = vec![];
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut doc: Value = serde::Deserialize::deserialize(doc).unwrap();
        let spec = match doc["kind"].as_str() {
            Some("Pod") => &mut doc["spec"],
            Some("Deployment") => &mut doc["spec"]["template"]["spec"],
            _ => {
                docs.push(doc);
                continue;
            }
        };
        for container in spec["containers"].as_array_mut().unwrap() {
            container["image"] = json!(env.image("BUSYBOX"));
            container["command"] = json!(["sleep", "36000"]);
            container.as_object_mut().unwrap().remove("ports");
        }
        spec.as_object_mut().unwrap().extend(env.placement().as_object().unwrap().clone());
        docs.push(doc);
    }
    let yaml: Vec<String> = docs.iter().map(|d| serde_yaml::to_string(d).unwrap()).collect();
    std::fs::write(out, yaml.join("---\n")).unwrap();
}

/// One of the repository's scripts as a user runs it, with kubectl and
/// secop built here; its output (stdout and stderr in order) is printed,
/// and the test fails when the script does.
fn run_script(env: &Env, script: &str, args: &[&str]) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"script="$1"; shift; exec bash "$script" "$@" 2>&1"#)
        .arg("run_script")
        .arg(repo(script))
        .args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .env("KUBECTL", &env.kubectl)
        .env("SECOP", env!("CARGO_BIN_EXE_secop"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{script} failed ({}); its output is above", out.status);
}

/// test/run-ctem-scenarios.sh on this node's scenario pods.
fn run_ctem_scenarios(env: &Env, es_url: &str, pods: &Path) {
    scenario_pods(env, pods);
    run_script(
        env,
        "test/run-ctem-scenarios.sh",
        &["--endpoint", es_url, "--pods", pods.to_str().unwrap(), "--timeout", "240"],
    );
}

/// A plain pod next to the sensors sends forged alerts to the gateway's
/// Service (cluster DNS, kube-proxy), as any pod can where NetworkPolicies
/// are not enforced (this node's bridge CNI does not): over plain OTLP,
/// over TLS without a client certificate, and with a certificate of a CA it
/// made itself. The gateway's mutual TLS refuses all three; the same pod
/// with the node collectors' certificate (mounted from the operator's
/// Secret, as only a pod of the agent namespace can) is the control whose
/// alert lands.
async fn forged_events_are_refused_by_the_gateway(client: &Client, env: &Env, es_url: &str) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let name = "forged-otlp-sender";
    let gateway = format!("otel-gateway.{AGENT_NAMESPACE}.svc");
    let own_ca = secop_operator::issue_telemetry_files(std::slice::from_ref(&gateway)).unwrap();
    let senders = [
        ("plain", json!({ "insecure": true })),
        ("no-certificate", json!({ "ca_file": "/etc/sender-tls/ca.crt" })),
        (
            "own-ca",
            json!({ "ca_file": "/etc/sender-tls/ca.crt", "cert_file": "/etc/sender/own.crt", "key_file": "/etc/sender/own.key" }),
        ),
        (
            "control",
            json!({ "ca_file": "/etc/sender-tls/ca.crt", "cert_file": "/etc/sender-tls/node.crt", "key_file": "/etc/sender-tls/node.key" }),
        ),
    ];
    let config = forger::sender_config("/etc/sender/forged.log", &format!("{gateway}:4317"), &senders, None);
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": AGENT_NAMESPACE },
        "data": {
            "config.yaml": serde_yaml::to_string(&config).unwrap(),
            "forged.log": forger::forged_alert(),
            "own.crt": own_ca["node.crt"],
            "own.key": own_ca["node.key"],
        },
    }))
    .unwrap();
    let mut pod = json!({
        "metadata": { "name": name, "namespace": AGENT_NAMESPACE },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001 },
            "containers": [{
                "name": "sender",
                "image": env.image("OTELCOL"),
                "args": ["--config=/etc/sender/config.yaml"],
                "volumeMounts": [
                    { "name": "sender", "mountPath": "/etc/sender", "readOnly": true },
                    { "name": "tls", "mountPath": "/etc/sender-tls", "readOnly": true },
                ],
            }],
            "volumes": [
                { "name": "sender", "configMap": { "name": name } },
                { "name": "tls", "secret": { "secretName": secop_engine::TELEMETRY_SECRET, "defaultMode": 0o440 } },
            ],
        },
    });
    pod["spec"].as_object_mut().unwrap().extend(env.placement().as_object().unwrap().clone());
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), AGENT_NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), AGENT_NAMESPACE);
    let _ = pods.delete(name, &DeleteParams::default().grace_period(0)).await;
    let _ = config_maps.delete(name, &DeleteParams::default()).await;
    wait_for("an earlier sender pod to go", Duration::from_secs(60), || async {
        Ok(pods.get_opt(name).await.map_err(|e| e.to_string())?.is_none())
    })
    .await;
    config_maps.create(&Default::default(), &config_map).await.unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();

    let es = secop_elastic::Elastic::new(&secop_elastic::ElasticConfig::new(vec![es_url.to_string()])).unwrap();
    let count = |sender: Option<&'static str>| {
        let es = es.clone();
        async move {
            let mut filter = vec![json!({ "term": { "forged": true } })];
            filter.extend(sender.map(|s| json!({ "term": { "sender": s } })));
            let _ = es.refresh("security-events").await;
            es.ok(
                secop_elastic::Method::POST,
                "security-events/_count",
                Some(&json!({ "query": { "bool": { "filter": filter } } })),
            )
            .await
            .map(|a| a["count"].as_u64().unwrap_or(0))
            .map_err(|e| e.to_string())
        }
    };
    let pod_log = || async { pods.logs(name, &Default::default()).await.unwrap_or_default() };
    let started = Instant::now();
    loop {
        if count(Some("control")).await.unwrap_or(0) > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the control sender's alert did not land in 120 s\n--- sender pod:\n{}\n{}",
            pods.get_opt(name).await.ok().flatten().map(|p| format!("{:?}", p.status)).unwrap_or_default(),
            pod_log().await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The four exporters got the alert together, and none retries.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for sender in ["plain", "no-certificate", "own-ca"] {
        assert_eq!(count(Some(sender)).await.unwrap(), 0, "{sender}: a forged alert landed\n{}", pod_log().await);
    }
    assert_eq!(count(None).await.unwrap(), 1, "the control's alert only");
    eprintln!("forged OTLP from a plain pod refused by the gateway's mutual TLS (plain, no certificate, another CA)");
    pods.delete(name, &DeleteParams::default().grace_period(0)).await.unwrap();
    config_maps.delete(name, &DeleteParams::default()).await.unwrap();
}

/// A Job from the ctem-validation CronJob, now; then every scenario
/// Passed in status.validation and the Validated condition True.
async fn run_validation_now(client: &Client) {
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    let started = Instant::now();
    let cronjob = Api::<CronJob>::namespaced(client.clone(), AGENT_NAMESPACE).get("ctem-validation").await.unwrap();
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": "ctem-validation-now", "namespace": AGENT_NAMESPACE },
        "spec": cronjob.spec.unwrap().job_template.spec,
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), AGENT_NAMESPACE);
    let _ = jobs.delete("ctem-validation-now", &DeleteParams::background()).await;
    wait_for("an earlier validation Job to go", Duration::from_secs(60), || async {
        Ok(jobs.get_opt("ctem-validation-now").await.map_err(|e| e.to_string())?.is_none())
    })
    .await;
    jobs.create(&kube::api::PostParams::default(), &job).await.unwrap();
    wait_for("the validation Job to finish", Duration::from_secs(420), || async {
        let status = jobs.get("ctem-validation-now").await.map_err(|e| e.to_string())?.status.unwrap_or_default();
        if status.failed.unwrap_or(0) > 0 {
            let failed = pods(client, AGENT_NAMESPACE, "job-name=ctem-validation-now").await;
            let mut why = vec![];
            for pod in &failed {
                why.push(pod_trouble(client, pod).await);
            }
            panic!("the validation Job failed:\n{}", why.join("\n"));
        }
        Ok(status.succeeded == Some(1))
    })
    .await;
    let pod = pods(client, AGENT_NAMESPACE, "job-name=ctem-validation-now").await.remove(0);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), AGENT_NAMESPACE);
    let pod_name = pod.metadata.name.clone().unwrap();
    let log = |container: &'static str| {
        let (pod_api, pod_name) = (pod_api.clone(), pod_name.clone());
        async move {
            pod_api
                .logs(&pod_name, &kube::api::LogParams { container: Some(container.to_string()), ..Default::default() })
                .await
                .unwrap_or_default()
        }
    };
    let (scenarios, check) = (log("scenarios").await, log("check").await);
    eprintln!("validation pod {pod_name}, {:.1} s:\n{scenarios}\n{check}", started.elapsed().as_secs_f64());
    let agents: Api<SecurityAgent> = Api::namespaced(client.clone(), AGENT_NAMESPACE);
    let status = agents.get("poc-security").await.unwrap().status.unwrap();
    let validation = status.validation.clone().expect("status.validation written by the check");
    assert_eq!(validation.pod.as_deref(), Some(pod_name.as_str()));
    let failed: Vec<_> =
        validation.scenarios.iter().filter(|s| s.result != secop_api::ScenarioOutcome::Passed).collect();
    assert!(
        failed.is_empty() && validation.scenarios.len() == 5,
        "every scenario detected by every enabled tool: {failed:?}\n{scenarios}\n{check}"
    );
    wait_for("the Validated condition", Duration::from_secs(60), || async {
        let agent = agents.get("poc-security").await.map_err(|e| e.to_string())?;
        Ok(condition(&agent, "Validated").is_some_and(|(status, _)| status == "True"))
    })
    .await;
    jobs.delete("ctem-validation-now", &DeleteParams::background()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_every_rendered_workload_on_a_real_node() {
    let Some(env) = env() else { return };
    let client = client(&env.kubeconfig).await;
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    // Pods reach this Elasticsearch at the node's address.
    let es_dir = tmp.join("real-node-elasticsearch");
    let _ = std::fs::remove_dir_all(&es_dir);
    let es = secop_test_harness::Elasticsearch::start_also_on(
        &env.es_home,
        &es_dir,
        secop_test_harness::free_port(),
        &env.node_ip,
    )
    .unwrap();
    let es_for_pods = format!("http://{}:{}", env.node_ip, es.port);

    // What a failed earlier run on a cluster kept up left behind.
    let agents: Api<SecurityAgent> = Api::namespaced(client.clone(), AGENT_NAMESPACE);
    if agents.get_opt("poc-security").await.ok().flatten().is_some() {
        let no_finalizers = json!({ "metadata": { "finalizers": null } });
        agents
            .patch("poc-security", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&no_finalizers))
            .await
            .unwrap();
        let _ = agents.delete("poc-security", &DeleteParams::default()).await;
    }
    helm(&env, &["uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "--wait"]);

    // 1. The chart, as a cluster admin installs it: 2 replicas on the real
    //    node, the image from the cluster's registry.
    let operator_image = env.image("OPERATOR");
    let (repository, tag) = operator_image.rsplit_once(':').unwrap();
    let placement = env.placement();
    // The admin's policy for this cluster: agents in the agent namespace,
    // and the stand-in images of the cluster's registry (override images
    // of the built-in features are refused by default).
    let registry_host = operator_image.split('/').next().unwrap();
    let policy =
        json!({ "agentNamespaces": [AGENT_NAMESPACE], "images": { "allowed": [format!("{registry_host}/")] } });
    // The chart grants the features' Role rules in each listed namespace:
    // it must exist first, as an admin creates a team's namespace first.
    create_namespace(&client, AGENT_NAMESPACE).await;
    let installed = Instant::now();
    helm(
        &env,
        &[
            "install",
            RELEASE,
            repo("deploy/helm/security-operator").to_str().unwrap(),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--set",
            &format!("image.repository={repository}"),
            "--set",
            &format!("image.tag={tag}"),
            "--set-json",
            &format!("tolerations={}", placement["tolerations"]),
            "--set-json",
            &format!("nodeSelector={}", placement["nodeSelector"]),
            "--set-json",
            &format!("policy.agentNamespaces={}", policy["agentNamespaces"]),
            "--set-json",
            &format!("policy.images={}", policy["images"]),
            "--wait",
            "--timeout",
            "5m",
        ],
    );
    let operators = operator_pods(&client).await;
    assert_eq!(operators.len(), 2, "two operator replicas");
    for pod in &operators {
        assert!(running_and_ready(pod), "{}", pod_trouble(&client, pod).await);
        assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some(env.node.as_str()));
        assert_eq!(
            pod.spec.as_ref().unwrap().service_account_name.as_deref(),
            Some(RELEASE),
            "runs as the chart's ServiceAccount"
        );
    }
    let names: BTreeSet<String> = operators.iter().filter_map(|p| p.metadata.name.clone()).collect();
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    wait_for("one operator pod to hold the lease", Duration::from_secs(60), || async {
        let holder =
            leases.get_opt("security-operator").await.map_err(|e| e.to_string())?.and_then(|l| l.spec?.holder_identity);
        Ok(holder.is_some_and(|h| names.contains(&h)))
    })
    .await;

    // The chart's admission webhook, as installed: the API server calls
    // the operator pods through the webhook Service (kube-proxy), trusting
    // the CA the operator issued and put in the caBundle itself. A team's
    // `kubectl apply` of a wrong feature config is refused naming the field.
    let tenant = tenant_kubeconfig(
        &client,
        &env.kubeconfig,
        AGENT_NAMESPACE,
        "agent-author",
        &tmp.join("real-node-tenant.kubeconfig"),
    )
    .await;
    let wrong = json!({
        "apiVersion": "security.example.io/v1alpha1",
        "kind": "SecurityAgent",
        "metadata": { "name": "wrong-driver", "namespace": AGENT_NAMESPACE },
        "spec": { "features": [ { "name": "falco", "config": { "driver": "kmod" } } ] },
    });
    let refusal = kubectl_apply_until_refused(&client, &env.kubectl, &tenant, &wrong, Duration::from_secs(90)).await;
    assert!(refusal.contains("spec.features[falco].config.driver: "), "{refusal}");
    eprintln!("webhook on the real node: {}", refusal.trim());

    // 2. The full sample: every rendered workload's pods run on the node.
    create_namespace(&client, AGENT_NAMESPACE).await;
    let agent = agent(&env, &es_for_pods);
    apply_agent(&client, AGENT_NAMESPACE, &agent).await;
    wait_ready(&client, AGENT_NAMESPACE, "poc-security", Duration::from_secs(300)).await;
    let table = wait_all_running(&client, &env, AGENT_NAMESPACE, Duration::from_secs(300)).await;
    eprintln!("helm install → every pod Ready: {:.1} s", installed.elapsed().as_secs_f64());
    for (pid, usage, peak, hwm) in operator_memory() {
        eprintln!(
            "operator pod process {pid}: cgroup memory {usage:.1} MiB (peak {peak:.1} MiB), peak RSS {hwm:.1} MiB"
        );
    }
    for expected in [
        "DaemonSet/falco",
        "DaemonSet/tetragon",
        "DaemonSet/osquery",
        "DaemonSet/otel-node",
        "Deployment/otel-gateway",
        "Deployment/trivy-operator",
        "Deployment/posture",
    ] {
        assert!(table.iter().any(|(w, _, _)| w == expected), "{expected} has a pod on the real node");
    }

    // The data path on the node, driven by the scenarios of test/scenarios: the
    // stand-ins see them through the kernel and write where the real tools
    // write (stdout → the kubelet's CRI logs under /var/log/pods; osquery's
    // results file); the node collector pod tails them and ships through
    // the gateway pod (Service name → cluster DNS → kube-proxy) into
    // Elasticsearch, whose templates the gateway's es-setup init
    // installed; `secop ctem-report` must then find no failed check.
    let shipped = Instant::now();
    run_ctem_scenarios(&env, &es.url(), &tmp.join("real-node-scenario-pods.yaml"));
    eprintln!(
        "scenarios run and every CTEM check passed {:.1} s after every pod was Ready",
        shipped.elapsed().as_secs_f64()
    );
    forged_events_are_refused_by_the_gateway(&client, &env, &es.url()).await;

    // Continuous validation (spec.tests): the CronJob's Job, started now
    // instead of on schedule, performs the scenarios in its own pod and
    // checks their detections; its result is status.validation and the
    // Validated condition.
    run_validation_now(&client).await;

    // The one-minute demo (demo/live-demo.sh) on the agent as applied: tetragon off and
    // on, a Falco override rolled out, the conditions, the CTEM report
    // (`cargo xtask demo` runs this test to show it). It keeps the agent:
    // the steps below check the same on the pods themselves.
    let agent_file = tmp.join("real-node-agent.yaml");
    std::fs::write(&agent_file, serde_yaml::to_string(&agent).unwrap()).unwrap();
    run_script(
        &env,
        "demo/live-demo.sh",
        &["--agent", agent_file.to_str().unwrap(), "--endpoint", &es.url(), "--keep"],
    );

    // The trivy-es-sync Deployment's pod: templates installed, the reports
    // watched, a full sync done (the stand-in Trivy Operator writes none).
    let sync_pods = pods(&client, AGENT_NAMESPACE, "app.kubernetes.io/name=trivy-es-sync").await;
    assert_eq!(sync_pods.len(), 1, "one sync pod");
    let sync_pod = sync_pods[0].metadata.name.clone().unwrap();
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), AGENT_NAMESPACE);
    wait_for("the trivy-es-sync pod to watch the reports and sync", Duration::from_secs(120), || async {
        let log = pod_api.logs(&sync_pod, &Default::default()).await.map_err(|e| e.to_string())?;
        Ok(log.contains("trivy-sync: watching VulnerabilityReports") && log.contains("trivy-sync: 0 reports"))
    })
    .await;

    // 3. Tetragon off: its DaemonSet and pods go; on: they come back.
    let tetragon = "app.kubernetes.io/name=tetragon";
    let before = uids(&pods(&client, AGENT_NAMESPACE, tetragon).await);
    let mut toggled = agent.clone();
    for feature in toggled["spec"]["features"].as_array_mut().unwrap() {
        if feature["name"] == "tetragon" {
            feature["enabled"] = json!(false);
        }
    }
    apply_agent(&client, AGENT_NAMESPACE, &toggled).await;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), AGENT_NAMESPACE);
    wait_for("tetragon's DaemonSet and pods to go", Duration::from_secs(120), || async {
        let gone = daemonsets.get_opt("tetragon").await.map_err(|e| e.to_string())?.is_none();
        let api: Api<Pod> = Api::namespaced(client.clone(), AGENT_NAMESPACE);
        Ok(gone && api.list(&ListParams::default().labels(tetragon)).await.map_err(|e| e.to_string())?.items.is_empty())
    })
    .await;
    apply_agent(&client, AGENT_NAMESPACE, &agent).await;
    wait_rolled(&client, tetragon, &before, "tetragon's pods to come back Running and Ready").await;

    // 4. A Falco override changes: the real pod is replaced.
    let falco = "app.kubernetes.io/name=falco";
    let before = uids(&pods(&client, AGENT_NAMESPACE, falco).await);
    let mut changed = agent.clone();
    changed["spec"]["override"]["falco"]["resources"]["limits"]["memory"] = json!("1536Mi");
    apply_agent(&client, AGENT_NAMESPACE, &changed).await;
    wait_rolled(&client, falco, &before, "a new falco pod with the changed override, Running and Ready").await;
    let falco_pod = pods(&client, AGENT_NAMESPACE, falco).await.remove(0);
    let limits = falco_pod.spec.unwrap().containers[0].resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["memory"].0, "1536Mi");

    // 5. The agent deleted: everything it owned goes, the operator stays.
    let current: SecurityAgent = agent_status(&client, AGENT_NAMESPACE, "poc-security").await.unwrap();
    let inventory = current.status.as_ref().unwrap().inventory.clone();
    assert!(!live_objects(&client, AGENT_NAMESPACE, &current).await.is_empty());
    Api::<SecurityAgent>::namespaced(client.clone(), AGENT_NAMESPACE)
        .delete("poc-security", &DeleteParams::default())
        .await
        .unwrap();
    // CRDs stay by design: deleting one deletes every object of its kind in
    // the cluster (README, "What a reconcile does").
    wait_for("every object of the agent but its CRDs to be gone", Duration::from_secs(120), || async {
        let agent_gone = Api::<SecurityAgent>::namespaced(client.clone(), AGENT_NAMESPACE)
            .get_opt("poc-security")
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        let left: Vec<_> = live_objects_of(&client, AGENT_NAMESPACE, "poc-security", &inventory)
            .await
            .into_iter()
            .filter(|(kind, _)| kind != "CustomResourceDefinition")
            .collect();
        if agent_gone && left.is_empty() { Ok(true) } else { Err(format!("left: {left:?}")) }
    })
    .await;
    wait_for("the agent's pods to terminate", Duration::from_secs(120), || async {
        let api: Api<Pod> = Api::namespaced(client.clone(), AGENT_NAMESPACE);
        let left: Vec<String> = api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        if left.is_empty() { Ok(true) } else { Err(format!("left: {left:?}")) }
    })
    .await;
    let operators = operator_pods(&client).await;
    assert_eq!(operators.len(), 2);
    for pod in &operators {
        assert!(running_and_ready(pod), "{}", pod_trouble(&client, pod).await);
        let restarts: i32 =
            pod.status.as_ref().unwrap().container_statuses.iter().flatten().map(|c| c.restart_count).sum();
        assert_eq!(restarts, 0, "operator pod {} restarted", pod.metadata.name.as_deref().unwrap_or_default());
    }

    helm(&env, &["uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", "--timeout", "2m"]);
    drop(es);
}
