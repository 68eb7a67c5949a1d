//! The operator on a real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok nodes), started by
//! `cargo xtask test` (or `cargo xtask cluster up` + the env it prints).
//!
//! Without the cluster these tests fail when CI=true and are skipped
//! otherwise. They run one at a time: agents in different namespaces share
//! cluster-scoped CRDs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/pipeline.rs"]
mod pipeline;
use pipeline::run_ok;
#[path = "common/scaffold.rs"]
mod scaffold;
use cluster::{
    agent_status, apply_agent, client, condition, create_namespace, delete_agent, install_crd, kubectl_apply,
    kubectl_apply_until_refused, live_objects, namespace_kubeconfig, repo, service_account_kubeconfig,
    tenant_kubeconfig, wait_for, wait_ready,
};

fn kubectl() -> PathBuf {
    std::env::var_os("SECOP_KUBECTL").expect("SECOP_KUBECTL (cargo xtask test builds kubectl)").into()
}
use secop_api::SecurityAgent;
use serde_json::{Value, json};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Env {
    kubeconfig: PathBuf,
    operator_kubeconfig: PathBuf,
    /// The chart's release namespace: its ServiceAccount is the operator's
    /// identity, its Role holds the leader-election lease.
    operator_namespace: String,
    audit_log: PathBuf,
}

/// The test cluster, or None (skip) outside CI.
fn env() -> Option<Env> {
    match std::env::var_os("SECOP_E2E_KUBECONFIG") {
        Some(kubeconfig) => Some(Env {
            kubeconfig: kubeconfig.into(),
            operator_kubeconfig: std::env::var_os("SECOP_E2E_OPERATOR_KUBECONFIG")
                .expect("SECOP_E2E_OPERATOR_KUBECONFIG")
                .into(),
            operator_namespace: std::env::var("SECOP_E2E_OPERATOR_NAMESPACE").expect("SECOP_E2E_OPERATOR_NAMESPACE"),
            audit_log: std::env::var_os("SECOP_E2E_AUDIT_LOG").expect("SECOP_E2E_AUDIT_LOG").into(),
        }),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "CI expects the e2e control plane: run the suite with `cargo xtask test` (SECOP_E2E_KUBECONFIG is not set)"
            )
        }
        None => {
            eprintln!(
                "skipping e2e test: no test cluster (run `cargo xtask test`, or `cargo xtask cluster up` and export its env)"
            );
            None
        }
    }
}

/// The operator under test, as a process (so it can be killed).
struct Operator {
    child: Child,
}

impl Operator {
    fn start(env: &Env, namespace: &str) -> Self {
        Self::start_with(env, namespace, &[])
    }

    fn start_with(env: &Env, namespace: &str, extra: &[&str]) -> Self {
        Self::start_as(&env.operator_kubeconfig, namespace, extra)
    }

    /// With another identity than the chart's ServiceAccount. An empty
    /// `namespace` watches every namespace.
    fn start_as(kubeconfig: &Path, namespace: &str, extra: &[&str]) -> Self {
        let suffix = extra.iter().find_map(|a| a.strip_prefix("--identity=")).unwrap_or("single");
        let label = if namespace.is_empty() { "all" } else { namespace };
        let log = std::fs::File::create(
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-{label}-{suffix}.log")),
        )
        .unwrap();
        let mut args = vec!["run", "--log-format", "text"];
        if !namespace.is_empty() {
            args.extend(["--namespace", namespace]);
        }
        if !extra.iter().any(|a| a.starts_with("--metrics-addr")) {
            args.push("--metrics-addr=127.0.0.1:0");
        }
        let child = Command::new(env!("CARGO_BIN_EXE_secop"))
            .args(args)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("SECOP_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("secop-e2e-cache"))
            // As the chart's Secret: precompiled modules stay valid across
            // the operator restarts of these tests.
            .env("SECOP_CACHE_KEY", "e2e-cache-key")
            .env("SECOP_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start secop run");
        Self { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The full sample, moved into `namespace`, its node agents kept on the
/// kwok nodes (its toleration of every taint would also place them on the
/// real node, which the real-node test owns). Its validation CronJob
/// (spec.tests) is rendered and applied, on a schedule that never comes
/// (31 February): a run at the top of an hour would create a Job and a pod
/// in the middle of another test (the posture test counts every write).
fn sample(namespace: &str) -> Value {
    let mut agent: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("deploy/samples/securityagent_full.yaml")).unwrap())
            .unwrap();
    agent["metadata"]["namespace"] = json!(namespace);
    agent["spec"]["override"]["nodeAgent"]["nodeSelector"] = json!({ "type": "kwok" });
    agent["spec"]["tests"]["schedule"] = json!("0 0 31 2 *");
    agent
}

fn dynamic(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// Whether the object exists (a kind whose CRD is gone has no objects).
async fn exists<K>(api: &Api<K>, name: &str) -> bool
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(found) => found.is_some(),
        Err(kube::Error::Api(e)) if e.code == 404 => false,
        Err(e) => panic!("reading {name}: {e}"),
    }
}

/// Write requests of the operator user in the audit log so far.
fn operator_writes(env: &Env) -> Vec<String> {
    let text = std::fs::read_to_string(&env.audit_log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| matches!(e["verb"].as_str(), Some("create" | "update" | "patch" | "delete" | "deletecollection")))
        .map(|e| format!("{} {}", e["verb"].as_str().unwrap_or(""), e["requestURI"].as_str().unwrap_or("")))
        .collect()
}

/// Requests (any verb) of the operator user so far: proof that it ran.
fn operator_requests(env: &Env) -> usize {
    std::fs::read_to_string(&env.audit_log)
        .map(|t| t.lines().filter(|l| l.contains("\"ResponseComplete\"")).count())
        .unwrap_or(0)
}

fn node_config_receivers(cm: &ConfigMap) -> Vec<String> {
    let config: Value = serde_yaml::from_str(cm.data.as_ref().unwrap()["config.yaml"].as_str()).unwrap();
    config["receivers"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_on_a_real_control_plane() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    // A namespace of its own per run: a cluster kept up between runs may
    // hold what an earlier, failed run left behind.
    let ns = &format!("e2e-lifecycle-{}", std::process::id());
    create_namespace(&client, ns).await;
    let metrics_port = 18000 + (std::process::id() % 1000) as u16;
    let metrics_addr = format!("--metrics-addr=127.0.0.1:{metrics_port}");
    let mut operator = Operator::start_with(&env, ns, &[&metrics_addr]);
    let agent = sample(ns);
    apply_agent(&client, ns, &agent).await;

    // G1: everything deployed, DaemonSet pods Ready on the 3 kwok nodes,
    // every feature condition True.
    wait_ready(&client, ns, "poc-security", Duration::from_secs(180)).await;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    for ds in ["falco", "tetragon", "osquery", "otel-node"] {
        let status = daemonsets.get(ds).await.unwrap().status.unwrap();
        assert_eq!(status.number_ready, 3, "{ds} ready on the 3 kwok nodes");
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    assert!(exists(&deployments, "otel-gateway").await && exists(&deployments, "trivy-operator").await);
    let tracing_policies = dynamic(&client, "cilium.io", "v1alpha1", "TracingPolicy", "tracingpolicies", None);
    assert!(exists(&tracing_policies, "container-escape-monitor").await);
    let agent_now = agent_status(&client, ns, "poc-security").await.unwrap();
    for c in ["PipelineReady", "FalcoReady", "TetragonReady", "OSQueryReady", "TrivyReady", "PostureReady"] {
        assert_eq!(condition(&agent_now, c).map(|c| c.0), Some("True".into()), "{c}");
    }

    // Deleted out of band, restored from the watch (not the 5-minute
    // resync): a cluster-scoped ClusterRole and a namespaced ServiceAccount.
    let cluster_roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    let role = format!("secop-{ns}-tetragon");
    let (old_role, old_account) =
        (cluster_roles.get(&role).await.unwrap().metadata.uid, accounts.get("falco").await.unwrap().metadata.uid);
    cluster_roles.delete(&role, &DeleteParams::default()).await.unwrap();
    accounts.delete("falco", &DeleteParams::default()).await.unwrap();
    wait_for("the deleted ClusterRole and ServiceAccount restored", Duration::from_secs(60), || async {
        let role = cluster_roles.get_opt(&role).await.map_err(|e| e.to_string())?;
        let account = accounts.get_opt("falco").await.map_err(|e| e.to_string())?;
        Ok(role.is_some_and(|r| r.metadata.uid != old_role) && account.is_some_and(|a| a.metadata.uid != old_account))
    })
    .await;
    // Alone (no other deletion to trigger the reconcile): the TracingPolicy,
    // a kind the operator knows only once tetragon rendered it, restored by
    // the watch started for that kind (host/operator/src/watches.rs).
    let policy = "container-escape-monitor";
    let old_policy = tracing_policies.get(policy).await.unwrap().metadata.uid;
    tracing_policies.delete(policy, &DeleteParams::default()).await.unwrap();
    wait_for("the deleted TracingPolicy restored", Duration::from_secs(60), || async {
        let policy = tracing_policies.get_opt(policy).await.map_err(|e| e.to_string())?;
        Ok(policy.is_some_and(|p| p.metadata.uid != old_policy))
    })
    .await;

    // Plumbing: metrics with real figures, health, and an Applied event.
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &format!("http://127.0.0.1:{metrics_port}{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let metrics = get("/metrics");
    assert!(metrics.ends_with("200"), "{metrics}");
    for needle in [
        "secop_reconcile_total{result=\"ok\"}",
        "secop_feature_call_duration_seconds_count{feature=\"falco\"}",
        "secop_reconcile_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}");
    }
    let applied: f64 = metrics
        .lines()
        .find(|l| l.starts_with("secop_objects_applied_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    // Every object but the CRDs, which an earlier agent of this cluster may
    // have created (then they are used, not applied again).
    let own_objects = desired_objects(&agent).iter().filter(|(kind, _)| kind != "CustomResourceDefinition").count();
    assert!(applied >= own_objects as f64, "objects applied: {applied}, the agent's own objects: {own_objects}");
    assert!(get("/healthz").ends_with("200") && get("/readyz").ends_with("200"));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let events = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("Applied")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("poc-security")),
        "an Applied event for the agent"
    );

    // A reconcile of an unchanged agent writes nothing: restart the
    // operator (its first list reconciles every agent) and count writes.
    operator.kill();
    let writes_before = operator_writes(&env).len();
    let requests_before = operator_requests(&env);
    let mut operator = Operator::start_with(&env, ns, &[&metrics_addr]);
    wait_for("the restarted operator's reconcile", Duration::from_secs(60), || async {
        Ok(operator_requests(&env) > requests_before + 10)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let new_writes: Vec<String> = operator_writes(&env).split_off(writes_before);
    assert!(new_writes.is_empty(), "a no-op reconcile wrote: {new_writes:#?}");

    // G3: nodeAgent tolerations land on every DaemonSet; falco memory only on falco.
    let mut changed = agent.clone();
    changed["spec"]["override"]["nodeAgent"]["tolerations"] =
        json!([{ "key": "dedicated", "operator": "Equal", "value": "security", "effect": "NoSchedule" }]);
    changed["spec"]["override"]["falco"]["resources"]["limits"]["memory"] = json!("3Gi");
    apply_agent(&client, ns, &changed).await;
    wait_ready(&client, ns, "poc-security", Duration::from_secs(120)).await;
    for ds in ["falco", "tetragon", "osquery", "otel-node"] {
        let spec = daemonsets.get(ds).await.unwrap().spec.unwrap().template.spec.unwrap();
        let tolerations = serde_json::to_value(spec.tolerations.unwrap()).unwrap();
        assert_eq!(
            tolerations,
            json!([{ "key": "dedicated", "operator": "Equal", "value": "security", "effect": "NoSchedule" }]),
            "{ds}"
        );
        let memory = spec.containers[0].resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0.clone();
        assert_eq!(
            memory,
            match ds {
                "falco" => "3Gi",
                "tetragon" => "512Mi",
                // osquery and the rest
                _ => "256Mi",
            },
            "{ds}"
        );
    }

    // G2: disabling tetragon removes its objects and its receiver; enabling
    // it brings them back.
    let toggle = |enabled: bool| {
        let mut a = changed.clone();
        for f in a["spec"]["features"].as_array_mut().unwrap() {
            if f["name"] == "tetragon" || f["name"] == "posture" {
                f["enabled"] = json!(enabled);
            }
        }
        a
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    apply_agent(&client, ns, &toggle(false)).await;
    wait_ready(&client, ns, "poc-security", Duration::from_secs(120)).await;
    assert!(!exists(&daemonsets, "tetragon").await);
    assert!(!exists(&config_maps, "tetragon-config").await);
    assert!(!exists(&tracing_policies, "container-escape-monitor").await);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(exists(&crds, "tracingpolicies.cilium.io").await, "CRDs are never pruned");
    let receivers = node_config_receivers(&config_maps.get("otel-node-config").await.unwrap());
    assert!(!receivers.contains(&"file_log/tetragon".to_string()), "{receivers:?}");
    let cluster_roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    let posture_role = format!("secop-{ns}-posture");
    assert!(
        !exists(&deployments, "posture").await && !exists(&cluster_roles, &posture_role).await,
        "posture pruned, its ClusterRole too"
    );
    apply_agent(&client, ns, &toggle(true)).await;
    wait_ready(&client, ns, "poc-security", Duration::from_secs(120)).await;
    assert!(exists(&daemonsets, "tetragon").await && exists(&tracing_policies, "container-escape-monitor").await);
    assert!(exists(&deployments, "posture").await && exists(&cluster_roles, &posture_role).await, "posture back");
    assert!(
        node_config_receivers(&config_maps.get("otel-node-config").await.unwrap())
            .contains(&"file_log/tetragon".to_string())
    );

    // A bad feature config: its condition says which field, nothing is
    // deleted, the other features stay ready.
    let mut bad = toggle(true);
    for f in bad["spec"]["features"].as_array_mut().unwrap() {
        if f["name"] == "osquery" {
            f["config"]["intervalSeconds"] = json!("x");
        }
    }
    apply_agent(&client, ns, &bad).await;
    wait_for("OSQueryReady=False naming the field", Duration::from_secs(60), || async {
        let a = agent_status(&client, ns, "poc-security").await?;
        Ok(a.status.as_ref().and_then(|s| s.observed_generation) == a.metadata.generation
            && condition(&a, "OSQueryReady").is_some_and(|(s, m)| s == "False" && m.contains("intervalSeconds")))
    })
    .await;
    let a = agent_status(&client, ns, "poc-security").await.unwrap();
    assert_eq!(condition(&a, "FalcoReady").unwrap().0, "True");
    assert_eq!(condition(&a, "Ready").unwrap().0, "False");
    assert!(exists(&daemonsets, "osquery").await, "the failed feature's DaemonSet is kept");
    assert!(exists(&config_maps, "osquery-pack-scope-minimal").await);
    assert!(
        node_config_receivers(&config_maps.get("otel-node-config").await.unwrap())
            .contains(&"file_log/osquery".to_string())
    );

    // Deleting the agent: the finalizer removes cluster-scoped objects,
    // the garbage collector the namespaced ones.
    let cluster_roles = dynamic(&client, "rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", None);
    let selector = format!("security.example.io/owner=poc-security,security.example.io/owner-namespace={ns}");
    assert!(!cluster_roles.list(&ListParams::default().labels(&selector)).await.unwrap().items.is_empty());
    delete_agent(&client, ns, "poc-security").await;
    assert!(
        cluster_roles.list(&ListParams::default().labels(&selector)).await.unwrap().items.is_empty(),
        "ClusterRoles removed by the finalizer"
    );
    assert!(!exists(&tracing_policies, "container-escape-monitor").await);
    wait_for("garbage collection of namespaced objects", Duration::from_secs(90), || async {
        let left = daemonsets
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| e.to_string())?
            .items
            .len()
            + config_maps.list(&ListParams::default().labels(&selector)).await.map_err(|e| e.to_string())?.items.len();
        Ok(left == 0)
    })
    .await;
    operator.kill();
}

/// The objects `secop render` wants for `agent` (with `extra` arguments).
fn rendered_objects(agent: &Value, extra: &[&str]) -> Vec<Value> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("agent-{}.yaml", std::process::id()));
    std::fs::write(&path, serde_yaml::to_string(agent).unwrap()).unwrap();
    serde_json::from_value(pipeline::render_file(&path, extra)["objects"].clone()).unwrap()
}

/// (kind, name) of every object `secop render` wants for `agent`.
fn desired_objects(agent: &Value) -> std::collections::BTreeSet<(String, String)> {
    rendered_objects(agent, &[])
        .iter()
        .map(|o| (o["kind"].as_str().unwrap().to_string(), o["metadata"]["name"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_reconcile_converges_without_duplicates_or_orphans() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    let ns = &format!("e2e-kill-{}", std::process::id());
    create_namespace(&client, ns).await;
    let agent = sample(ns);
    let mut operator = Operator::start(&env, ns);
    apply_agent(&client, ns, &agent).await;

    // Kill it as soon as its first object shows up: mid-reconcile.
    let service_accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    wait_for("the first applied object", Duration::from_secs(60), || async {
        Ok(exists(&service_accounts, "otel-node").await)
    })
    .await;
    operator.kill();
    let at_kill = agent_status(&client, ns, "poc-security").await.unwrap();
    assert!(condition(&at_kill, "Ready").is_none_or(|(s, _)| s != "True"), "killed after the reconcile had finished");

    let mut operator = Operator::start(&env, ns);
    wait_ready(&client, ns, "poc-security", Duration::from_secs(180)).await;
    let converged = agent_status(&client, ns, "poc-security").await.unwrap();
    let live = live_objects(&client, ns, &converged).await;
    // CRDs are the cluster's, not the agent's: one that an earlier agent
    // (or another installer) created is used as it is, not adopted
    // (resources::check_foreign), so it need only exist.
    let (crds, desired): (BTreeSet<_>, BTreeSet<_>) =
        desired_objects(&agent).into_iter().partition(|(kind, _)| kind == "CustomResourceDefinition");
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, name) in &crds {
        assert!(exists(&crd_api, name).await, "CRD {name}");
    }
    let live: BTreeSet<_> = live.into_iter().filter(|(kind, _)| kind != "CustomResourceDefinition").collect();
    let missing: Vec<_> = desired.difference(&live).collect();
    let orphans: Vec<_> = live.difference(&desired).collect();
    assert!(missing.is_empty() && orphans.is_empty(), "missing {missing:?}, orphans {orphans:?}");
    // The same objects, once each: one pod per node per DaemonSet.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let falco_pods = pods.list(&ListParams::default().labels("app.kubernetes.io/name=falco")).await.unwrap().items;
    assert_eq!(falco_pods.len(), 3, "one falco pod per node");

    delete_agent(&client, ns, "poc-security").await;
    operator.kill();
}

/// `helm lint`, then `helm template` applied to the real API server with a
/// server-side dry run: the chart is valid for the API it installs into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_chart_lints_and_applies_as_a_server_side_dry_run() {
    let Some(env) = env() else { return };
    let helm = std::env::var_os("SECOP_HELM").map(PathBuf::from).expect("SECOP_HELM (cargo xtask test builds helm)");
    let chart = repo("deploy/helm/security-operator");
    let lint = Command::new(&helm).arg("lint").arg(&chart).arg("--strict").output().unwrap();
    assert!(
        lint.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let template = Command::new(&helm)
        .args(["template", "secop"])
        .arg(&chart)
        .args(["--namespace", "security-operator", "--include-crds", "--kube-version", "v1.34.4"])
        // The console too (off by default), so its objects are checked.
        .args(["--set", "console.enabled=true"])
        .output()
        .unwrap();
    assert!(template.status.success(), "helm template: {}", String::from_utf8_lossy(&template.stderr));
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&template.stdout))
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Value| !d.is_null())
        .collect();

    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    create_namespace(&client, "security-operator").await;
    let mut kinds = vec![];
    for doc in &docs {
        let api_version = doc["apiVersion"].as_str().unwrap();
        let kind = doc["kind"].as_str().unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let (resource, caps) =
            kube::discovery::pinned_kind(&client, &GroupVersionKind::gvk(group, version, kind)).await.unwrap();
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(client.clone(), "security-operator", &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        api.patch(name, &PatchParams::apply("helm-dry-run").dry_run().force(), &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("server-side dry run of {kind} {name}: {e}"));
        kinds.push(kind.to_string());
    }
    for expected in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.iter().any(|k| k == expected), "chart renders a {expected}");
    }
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "secop").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    // No Service of the operator (webhook, metrics) selects the console's
    // pods, nor the console's Service the operator's.
    let console = docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "secop-console").unwrap();
    let pod_labels = |d: &Value| d["spec"]["template"]["metadata"]["labels"].as_object().unwrap().clone();
    for service in docs.iter().filter(|d| d["kind"] == "Service") {
        let selector = service["spec"]["selector"].as_object().unwrap();
        let selects = |labels: &serde_json::Map<String, Value>| selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        let name = service["metadata"]["name"].as_str().unwrap();
        assert_eq!(selects(&pod_labels(console)), name == "secop-console", "Service {name} and the console's pods");
        assert_eq!(selects(&pod_labels(deployment)), name != "secop-console", "Service {name} and the operator's pods");
    }
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(container["args"].as_array().unwrap().contains(&json!("--leader-elect")));
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);

    // Narrow RBAC: the rules the features grant in Roles (Trivy's leases
    // and secret deletion) are held only in the honoured namespaces, not
    // cluster-wide, unless agents are honoured everywhere.
    let render = |namespaces: &str| -> Vec<Value> {
        let out = Command::new(&helm)
            .args(["template", "secop"])
            .arg(&chart)
            .args([
                "--namespace",
                "security-operator",
                "--kube-version",
                "v1.34.4",
                "--set-json",
                &format!("policy.agentNamespaces={namespaces}"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
        serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|d: &Value| !d.is_null())
            .collect()
    };
    let grants = |doc: &Value, resource: &str, verb: &str| {
        doc["rules"].as_array().unwrap().iter().any(|r| {
            r["resources"].as_array().unwrap().contains(&json!(resource))
                && r["verbs"].as_array().unwrap().contains(&json!(verb))
        })
    };
    let narrow = render(r#"["team-a"]"#);
    let cluster_role = narrow.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    assert!(
        !grants(cluster_role, "leases", "update") && !grants(cluster_role, "secrets", "delete"),
        "no lease writes or secret deletion cluster-wide"
    );
    for namespace in ["security-operator", "team-a"] {
        let role = narrow
            .iter()
            .find(|d| {
                d["kind"] == "Role"
                    && d["metadata"]["name"] == "secop-features"
                    && d["metadata"]["namespace"] == namespace
            })
            .unwrap_or_else(|| panic!("a features Role in {namespace}"));
        assert!(
            grants(role, "leases", "update") && grants(role, "secrets", "delete") && grants(role, "secrets", "get")
        );
    }
    let everywhere = render(r#"["*"]"#);
    let cluster_role = everywhere.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    assert!(grants(cluster_role, "leases", "update"), "agents everywhere: the Role rules are cluster-wide");
    assert!(!everywhere.iter().any(|d| d["kind"] == "Role" && d["metadata"]["name"] == "secop-features"));

    // The admission webhook (docs/admission.md): by default the operator
    // keeps the certificate (its flags, a Secret Role, the caBundle by
    // name); with cert-manager a Certificate and the CA injector instead;
    // a review budget at or above the API server's timeout is refused.
    let template = |sets: &[&str]| {
        let mut cmd = Command::new(&helm);
        cmd.args(["template", "secop"]).arg(&chart).args([
            "--namespace",
            "security-operator",
            "--kube-version",
            "v1.34.4",
        ]);
        for set in sets {
            cmd.args(["--set", set]);
        }
        cmd.output().unwrap()
    };
    let parse = |out: &std::process::Output| -> Vec<Value> {
        assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
        serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|d: &Value| !d.is_null())
            .collect()
    };
    let args_of = |docs: &[Value]| -> Vec<String> {
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "secop").unwrap();
        serde_json::from_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone()).unwrap()
    };
    let webhook = docs.iter().find(|d| d["kind"] == "ValidatingWebhookConfiguration").unwrap();
    assert_eq!(webhook["webhooks"][0]["failurePolicy"], "Ignore");
    assert_eq!(webhook["webhooks"][0]["clientConfig"]["service"]["name"], "secop-webhook");
    let managed = args_of(&docs);
    assert!(managed.contains(&"--webhook-secret=secop-webhook-tls".to_string()), "{managed:?}");
    assert!(managed.contains(&"--webhook-host=secop-webhook.security-operator.svc".to_string()), "{managed:?}");
    let cert_manager = parse(&template(&["webhook.certManager.enabled=true", "webhook.failurePolicy=Fail"]));
    let webhook = cert_manager.iter().find(|d| d["kind"] == "ValidatingWebhookConfiguration").unwrap();
    assert_eq!(webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], "security-operator/secop-webhook");
    assert_eq!(webhook["webhooks"][0]["failurePolicy"], "Fail");
    let certificate = cert_manager.iter().find(|d| d["kind"] == "Certificate").unwrap();
    assert_eq!(certificate["spec"]["secretName"], "secop-webhook-tls");
    let args = args_of(&cert_manager);
    assert!(args.contains(&"--webhook-tls-dir=/etc/secop/webhook".to_string()), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--webhook-secret")), "{args:?}");
    assert!(!cert_manager.iter().any(|d| d["kind"] == "Role" && d["metadata"]["name"] == "secop-webhook-tls"));
    let too_slow = template(&["webhook.budgetMillis=5000"]);
    assert!(!too_slow.status.success());
    assert!(String::from_utf8_lossy(&too_slow.stderr).contains("webhook.budgetMillis"));
    let wrong_policy = template(&["webhook.failurePolicy=Sometimes"]);
    assert!(String::from_utf8_lossy(&wrong_policy.stderr).contains("webhook.failurePolicy"));
}

/// The operator's ClusterRole loses one rule: the agent says Forbidden,
/// naming the verb and resource, in its Ready condition and in an Event;
/// the operator keeps running and nothing is deleted. With the rule back,
/// it converges. The operator runs as a ServiceAccount of this test bound
/// to a copy of the chart's ClusterRole, so the shared one is never edited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_named_and_nothing_is_deleted() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    let ns = &format!("e2e-rbac-{}", std::process::id());
    create_namespace(&client, ns).await;
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    let chart_rules = roles.get(&env.operator_namespace).await.unwrap().rules.unwrap();
    let identity = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kubeconfig-{ns}"));
    service_account_kubeconfig(&client, &env.kubeconfig, ns, "operator", &json!(chart_rules), &identity).await;
    let role_name = format!("{ns}-operator");
    let mut operator = Operator::start_as(&identity, ns, &[]);
    let agent = sample(ns);
    apply_agent(&client, ns, &agent).await;
    wait_ready(&client, ns, "poc-security", Duration::from_secs(180)).await;
    let healthy = agent_status(&client, ns, "poc-security").await.unwrap();
    let before = live_objects(&client, ns, &healthy).await;

    // Take away the operator's own rule for Tetragon's TracingPolicies (the
    // one that may delete; the read-only rule it holds to grant Tetragon
    // stays), then change the agent so that one must be applied.
    let manages_cilium = |r: &k8s_openapi::api::rbac::v1::PolicyRule| {
        r.api_groups.as_ref().is_some_and(|g| g.iter().any(|g| g == "cilium.io"))
            && r.verbs.iter().any(|v| v == "delete")
    };
    let reduced: Vec<_> = chart_rules.iter().filter(|r| !manages_cilium(r)).cloned().collect();
    assert_eq!(reduced.len(), chart_rules.len() - 1, "the chart's ClusterRole has one rule managing cilium.io");
    let mut role = roles.get(&role_name).await.unwrap();
    role.rules = Some(reduced);
    roles.replace(&role_name, &PostParams::default(), &role).await.unwrap();
    // A new TracingPolicy must be applied (and Falco's DaemonSet changed).
    let mut changed = agent.clone();
    changed["spec"]["override"]["falco"]["resources"]["limits"]["memory"] = json!("2200Mi");
    for feature in changed["spec"]["features"].as_array_mut().unwrap() {
        if feature["name"] == "tetragon" {
            feature["config"]["policies"] =
                json!(["process-exec", "container-escape-monitor", "sensitive-file-access"]);
        }
    }
    apply_agent(&client, ns, &changed).await;

    wait_for(
        "Ready=False, reason Forbidden, naming the verb and tracingpolicies.cilium.io",
        Duration::from_secs(60),
        || async {
            let agent = agent_status(&client, ns, "poc-security").await?;
            let ready = agent.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
            Ok(ready.is_some_and(|c| {
                c.status == "False"
                    && c.reason == "Forbidden"
                    && c.message.contains("cannot patch tracingpolicies.cilium.io ")
            }))
        },
    )
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    wait_for("a Forbidden Event on the agent", Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        Ok(list.iter().any(|e| {
            e.reason.as_deref() == Some("Forbidden")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("poc-security")
                && e.note.as_deref().is_some_and(|n| n.contains("tracingpolicies.cilium.io"))
        }))
    })
    .await;
    assert!(operator.child.try_wait().unwrap().is_none(), "the operator keeps running");
    let during = live_objects(&client, ns, &healthy).await;
    assert_eq!(during, before, "nothing was deleted (or created) while the permission was missing");

    // The rule back: the change is applied and the agent is Ready.
    let mut restored = roles.get(&role_name).await.unwrap();
    restored.rules = Some(chart_rules);
    roles.replace(&role_name, &PostParams::default(), &restored).await.unwrap();
    wait_ready(&client, ns, "poc-security", Duration::from_secs(120)).await;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let falco = daemonsets.get("falco").await.unwrap().spec.unwrap().template.spec.unwrap();
    assert_eq!(falco.containers[0].resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0, "2200Mi");
    let tracing_policies = dynamic(&client, "cilium.io", "v1alpha1", "TracingPolicy", "tracingpolicies", None);
    assert!(exists(&tracing_policies, "sensitive-file-access").await, "the new TracingPolicy, once permitted");

    delete_agent(&client, ns, "poc-security").await;
    operator.kill();
}

/// Ready=False with reason Conflict and a message containing `expected`.
async fn wait_conflict(client: &Client, namespace: &str, expected: &str) {
    wait_for(&format!("Ready=False, reason Conflict, naming {expected}"), Duration::from_secs(90), || async {
        let agent = agent_status(client, namespace, "poc-security").await?;
        let ready = agent.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
        match ready {
            Some(c) if c.status == "False" && c.reason == "Conflict" && c.message.contains(expected) => Ok(true),
            other => Err(format!("Ready is {other:?}")),
        }
    })
    .await;
}

/// The operator never takes over an object it did not create (issue 13):
/// a ConfigMap of someone else's that has a name the falco feature renders,
/// and a second agent whose tetragon renders the cluster-wide TracingPolicy
/// the first agent owns. Each is a Conflict condition naming the object
/// and its owner; nothing of that agent is applied; the other object is
/// untouched, and deleting the second agent leaves the first one's policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_object_is_never_adopted_or_deleted() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    let first = &format!("e2e-own-a-{}", std::process::id());
    let second = &format!("e2e-own-b-{}", std::process::id());
    create_namespace(&client, first).await;
    create_namespace(&client, second).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), first);
    let foreign: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "falco-config" }, "data": { "owner": "another team" } }))
            .unwrap();
    config_maps.create(&PostParams::default(), &foreign).await.unwrap();
    // Someone's Secret with the name of the collectors' credential: the
    // operator checks it before anything is applied (host/operator/src/telemetry.rs).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), first);
    let foreign_secret: Secret = serde_json::from_value(
        json!({ "metadata": { "name": secop_engine::TELEMETRY_SECRET }, "stringData": { "owner": "another team" } }),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &foreign_secret).await.unwrap();

    let mut operator_a = Operator::start(&env, first);
    apply_agent(&client, first, &sample(first)).await;
    wait_conflict(
        &client,
        first,
        &format!(
            "Secret {first}/{} already exists and is not managed by the security operator",
            secop_engine::TELEMETRY_SECRET
        ),
    )
    .await;
    let untouched = secrets.get(secop_engine::TELEMETRY_SECRET).await.unwrap();
    assert_eq!(untouched.data.unwrap().keys().collect::<Vec<_>>(), ["owner"], "the foreign Secret as it was");
    assert!(untouched.metadata.owner_references.is_none());
    secrets.delete(secop_engine::TELEMETRY_SECRET, &DeleteParams::default()).await.unwrap();
    wait_conflict(
        &client,
        first,
        &format!("ConfigMap {first}/falco-config already exists and is not managed by the security operator"),
    )
    .await;
    let untouched = config_maps.get("falco-config").await.unwrap();
    assert_eq!(untouched.data.unwrap()["owner"], "another team");
    assert!(untouched.metadata.labels.unwrap_or_default().is_empty(), "no labels added to the foreign ConfigMap");
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), first);
    assert!(
        daemonsets.list(&ListParams::default()).await.unwrap().items.is_empty(),
        "nothing applied while in conflict"
    );

    // Its owner removes it: the agent converges (the error's requeue).
    config_maps.delete("falco-config", &DeleteParams::default()).await.unwrap();
    wait_ready(&client, first, "poc-security", Duration::from_secs(180)).await;
    // The credential now is the agent's, and both collectors trust its CA.
    let credential = secrets.get(secop_engine::TELEMETRY_SECRET).await.unwrap();
    let owners = credential.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owners.iter().map(|o| (o.kind.as_str(), o.name.as_str())).collect::<Vec<_>>(),
        [("SecurityAgent", "poc-security")]
    );
    let keys: Vec<&String> = credential.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["ca.crt", "ca.key", "gateway.crt", "gateway.key", "node.crt", "node.key"]);
    let node = daemonsets.get("otel-node").await.unwrap();
    let gateway = Api::<Deployment>::namespaced(client.clone(), first).get("otel-gateway").await.unwrap();
    let trusted = |template: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref()?.get("security.example.io/telemetry-ca").cloned())
    };
    let ca = trusted(&node.spec.as_ref().unwrap().template).expect("the node collector's template names its CA");
    assert_eq!(trusted(&gateway.spec.as_ref().unwrap().template).as_ref(), Some(&ca));
    assert_eq!(ca.len(), 16);

    // A second agent with tetragon: the cluster-wide TracingPolicy is the
    // first agent's.
    let tracing_policies = dynamic(&client, "cilium.io", "v1alpha1", "TracingPolicy", "tracingpolicies", None);
    let mut operator_b = Operator::start(&env, second);
    apply_agent(&client, second, &sample(second)).await;
    wait_conflict(
        &client,
        second,
        &format!(
            "TracingPolicy container-escape-monitor already exists and belongs to SecurityAgent {first}/poc-security"
        ),
    )
    .await;
    let owner_of_policy = |p: &DynamicObject| {
        p.metadata.labels.clone().unwrap_or_default().get("security.example.io/owner-namespace").cloned()
    };
    assert_eq!(
        owner_of_policy(&tracing_policies.get("container-escape-monitor").await.unwrap()).as_deref(),
        Some(first.as_str())
    );
    let second_daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), second);
    assert!(
        second_daemonsets.list(&ListParams::default()).await.unwrap().items.is_empty(),
        "nothing of the second agent applied"
    );

    delete_agent(&client, second, "poc-security").await;
    let policy = tracing_policies
        .get_opt("container-escape-monitor")
        .await
        .unwrap()
        .expect("the first agent's policy survives the second agent's deletion");
    assert_eq!(owner_of_policy(&policy).as_deref(), Some(first.as_str()));
    let first_agent = agent_status(&client, first, "poc-security").await.unwrap();
    assert_eq!(condition(&first_agent, "Ready").map(|(s, _)| s).as_deref(), Some("True"));

    delete_agent(&client, first, "poc-security").await;
    operator_a.kill();
    operator_b.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_fail_over() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    let ns = &format!("e2e-leader-{}", std::process::id());
    create_namespace(&client, ns).await;
    // The lease lives where the chart's Role lets the operator write it.
    let lease_ns = format!("--lease-namespace={}", env.operator_namespace);
    let mut a = Operator::start_with(&env, ns, &["--leader-elect", &lease_ns, "--identity=replica-a"]);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &env.operator_namespace);
    let holder = || async {
        leases
            .get_opt("security-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .unwrap_or_default()
    };
    wait_for("replica-a to lead", Duration::from_secs(30), || async { Ok(holder().await == "replica-a") }).await;
    let mut b = Operator::start_with(&env, ns, &["--leader-elect", &lease_ns, "--identity=replica-b"]);
    let agent = sample(ns);
    apply_agent(&client, ns, &agent).await;
    wait_ready(&client, ns, "poc-security", Duration::from_secs(120)).await;
    assert_eq!(holder().await, "replica-a", "the standby does not take the lease while the leader renews it");

    // The leader dies: the standby takes over once the lease expires (15 s)
    // and reconciles the next change.
    a.kill();
    wait_for("replica-b to take over", Duration::from_secs(40), || async { Ok(holder().await == "replica-b") }).await;
    let mut changed = agent.clone();
    changed["spec"]["override"]["falco"]["resources"]["limits"]["memory"] = json!("2500Mi");
    apply_agent(&client, ns, &changed).await;
    wait_ready(&client, ns, "poc-security", Duration::from_secs(120)).await;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let falco = daemonsets.get("falco").await.unwrap().spec.unwrap().template.spec.unwrap();
    assert_eq!(falco.containers[0].resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0, "2500Mi");

    delete_agent(&client, ns, "poc-security").await;
    b.kill();
}

/// A cluster policy file (the chart's `policy` values) for one test.
fn policy_file(name: &str, yaml: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("policy-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    path
}

fn sha256_of(path: &Path) -> String {
    pipeline::sha256_hex(&std::fs::read(path).unwrap())
}

/// `secop feature push`, the author's tool, into the loopback registry.
fn push(file: &Path, image: &str, registry: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args(["feature", "push", file.to_str().unwrap(), image, "--plain-http", registry])
        .env("SECOP_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("secop-e2e-push-cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "push {image}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Falco from `module`, and the Python kube_bench feature from the
/// registry (`kube_bench`): the agent of the module tests.
fn falco_agent(namespace: &str, module: Value, config: Value, kube_bench: &str) -> Value {
    json!({
        "apiVersion": "security.example.io/v1alpha1",
        "kind": "SecurityAgent",
        "metadata": { "name": "modules", "namespace": namespace },
        "spec": { "features": [
            { "name": "falco", "module": module, "config": config },
            { "name": "kube_bench", "module": { "image": kube_bench }, "config": { "schedule": "30 4 * * *" } },
        ] },
    })
}

/// The falco DaemonSet's (module-version annotation, first container image, uid).
async fn falco_daemonset(client: &Client, namespace: &str) -> Result<(Option<String>, String, String), String> {
    let ds = Api::<DaemonSet>::namespaced(client.clone(), namespace).get("falco").await.map_err(|e| e.to_string())?;
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let version = template
        .metadata
        .and_then(|m| m.annotations)
        .and_then(|a| a.get("security.example.io/module-version").cloned());
    let image = template.spec.and_then(|s| s.containers.first().and_then(|c| c.image.clone())).unwrap_or_default();
    Ok((version, image, ds.metadata.uid.unwrap_or_default()))
}

/// `status.features.falco`: (moduleImage, moduleDigest).
fn falco_module(agent: &SecurityAgent) -> (Option<String>, Option<String>) {
    let status = agent.status.as_ref().and_then(|s| s.features.get("falco"));
    (status.and_then(|f| f.module_image.clone()), status.and_then(|f| f.module_digest.clone()))
}

/// Wait until Degraded has `status` and `reason` for the current
/// generation; returns its message.
async fn wait_degraded(client: &Client, namespace: &str, status: &str, reason: &str) -> String {
    let degraded = || async {
        let agent = agent_status(client, namespace, "modules").await?;
        let observed = agent.status.as_ref().and_then(|s| s.observed_generation) == agent.metadata.generation;
        let degraded = agent.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Degraded"));
        Ok::<_, String>(degraded.filter(|c| observed && c.status == status && c.reason == reason))
    };
    wait_for(&format!("Degraded={status} ({reason})"), Duration::from_secs(60), || async {
        Ok(degraded().await?.is_some())
    })
    .await;
    degraded().await.unwrap().expect("stays until the next spec change").message
}

/// Issue #5 end to end on a real registry and a real control plane:
/// falco 0.1.0 → 0.2.0 swapped in the running operator; a digest mismatch
/// and a module that traps in configure are rolled back with nothing
/// deleted; a moved tag is picked up under `Always`; and a restarted
/// operator reconciles from its cache while the registry is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_modules_hot_swap_and_roll_back_on_a_real_registry() {
    let Some(env) = env() else { return };
    let registry_bin = std::env::var_os("SECOP_REGISTRY_BIN")
        .map(PathBuf::from)
        .expect("SECOP_REGISTRY_BIN (set by `cargo xtask test`)");
    let python =
        std::env::var_os("SECOP_PY_FEATURE").map(PathBuf::from).expect("SECOP_PY_FEATURE (set by `cargo xtask test`)");
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    let run = format!("{}-{}", std::process::id(), Instant::now().elapsed().as_nanos() % 1000);
    let ns = &format!("e2e-modules-{run}");
    create_namespace(&client, ns).await;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("modules-{run}"));
    let mut registry =
        secop_test_harness::Registry::start(&registry_bin, &dir.join("registry"), secop_test_harness::free_port())
            .unwrap();
    let host = registry.host();
    // A repository of this run: the operator's cache outlives runs.
    let repository = format!("{host}/features/falco-{}", std::process::id());
    let (v1, v2, v3) = (
        pipeline::component("feature_falco"),
        pipeline::component("feature_falco_next"),
        pipeline::component("feature_falco_broken"),
    );
    for (file, tag) in [(&v1, "0.1.0"), (&v2, "0.2.0"), (&v3, "0.3.0"), (&v1, "stable")] {
        push(file, &format!("{repository}:{tag}"), &host);
    }
    let kube_bench = &format!("{host}/features/kube-bench-{}:0.1.0", std::process::id());
    push(&python, kube_bench, &host);
    // The admin trusts this registry with everything the built-in falco and
    // kube-bench render, and Falco images of any tag.
    let policy = policy_file(
        "modules",
        &format!(
            "modules:\n  allowed:\n  - {{image: \"{host}/features/\", clusterScoped: true, hostAccess: true}}\nimages:\n  allowed: [docker.io/falcosecurity/falco]\n"
        ),
    );
    let operator_args =
        ["--plain-http", host.as_str(), "--module-poll-seconds", "2", "--policy", policy.to_str().unwrap()];
    let mut operator = Operator::start_with(&env, ns, &operator_args);
    let default_config = json!({});

    // 0.1.0 deploys: the built-in falco's objects, its digest in status.
    apply_agent(
        &client,
        ns,
        &falco_agent(ns, json!({ "image": format!("{repository}:0.1.0") }), default_config.clone(), kube_bench),
    )
    .await;
    wait_ready(&client, ns, "modules", Duration::from_secs(180)).await;
    let agent = agent_status(&client, ns, "modules").await.unwrap();
    assert_eq!(falco_module(&agent), (Some(format!("{repository}:0.1.0")), Some(sha256_of(&v1))));
    assert_eq!(condition(&agent, "Degraded").map(|c| c.0), Some("False".into()));
    let (version, _, uid) = falco_daemonset(&client, ns).await.unwrap();
    assert_eq!(version, None, "0.1.0 does not annotate its version");
    // The feature written in Python deploys like the Rust ones.
    let kube_bench_status = agent.status.as_ref().unwrap().features["kube_bench"].clone();
    assert_eq!(kube_bench_status.module_digest, Some(sha256_of(&python)));
    assert_eq!(condition(&agent, "KubeBenchReady").map(|c| c.0), Some("True".into()));
    let cronjob =
        Api::<k8s_openapi::api::batch::v1::CronJob>::namespaced(client.clone(), ns).get("kube-bench").await.unwrap();
    assert_eq!(cronjob.spec.unwrap().schedule, "30 4 * * *");
    assert_eq!(cronjob.metadata.labels.unwrap()["security.example.io/feature"], "kube_bench");

    // 0.2.0: swapped inside the same operator process, DaemonSet rolled.
    let switched = Instant::now();
    apply_agent(
        &client,
        ns,
        &falco_agent(ns, json!({ "image": format!("{repository}:0.2.0") }), default_config.clone(), kube_bench),
    )
    .await;
    wait_for("the DaemonSet of falco 0.2.0", Duration::from_secs(60), || async {
        Ok(falco_daemonset(&client, ns).await?.0.as_deref() == Some("0.2.0"))
    })
    .await;
    eprintln!("falco 0.1.0 → 0.2.0: DaemonSet updated {:.1?} after the reference changed", switched.elapsed());
    assert!(operator.child.try_wait().unwrap().is_none(), "the operator kept running through the swap");
    assert_eq!(falco_daemonset(&client, ns).await.unwrap().2, uid, "updated in place, not recreated");
    wait_ready(&client, ns, "modules", Duration::from_secs(60)).await;
    let agent = agent_status(&client, ns, "modules").await.unwrap();
    assert_eq!(falco_module(&agent), (Some(format!("{repository}:0.2.0")), Some(sha256_of(&v2))));

    // A wrong sha256 pin: refused, naming the module and both digests;
    // 0.2.0 stays.
    let wrong = sha256_of(&v1);
    apply_agent(
        &client,
        ns,
        &falco_agent(
            ns,
            json!({ "image": format!("{repository}:0.3.0"), "sha256": wrong }),
            default_config.clone(),
            kube_bench,
        ),
    )
    .await;
    let message = wait_degraded(&client, ns, "True", "ModuleRolledBack").await;
    for expected in [
        "falco",
        &format!("{repository}:0.3.0"),
        &wrong,
        &sha256_of(&v3),
        "DigestMismatch",
        &format!("rolled back to {repository}:0.2.0"),
    ] {
        assert!(message.contains(expected), "`{expected}` not in: {message}");
    }

    // Broken 0.3.0 (traps in configure): 0.2.0's objects stay, Degraded says why.
    apply_agent(
        &client,
        ns,
        &falco_agent(ns, json!({ "image": format!("{repository}:0.3.0") }), default_config.clone(), kube_bench),
    )
    .await;
    let message = wait_degraded(&client, ns, "True", "ModuleRolledBack").await;
    for expected in ["falco", "Trap", "configure", &format!("rolled back to {repository}:0.2.0")] {
        assert!(message.contains(expected), "`{expected}` not in: {message}");
    }
    let agent = agent_status(&client, ns, "modules").await.unwrap();
    assert_eq!(
        falco_module(&agent),
        (Some(format!("{repository}:0.2.0")), Some(sha256_of(&v2))),
        "status names the module in use"
    );
    assert_eq!(condition(&agent, "FalcoReady").map(|c| c.0), Some("True".into()), "the rolled-back module is assessed");
    let (version, _, still) = falco_daemonset(&client, ns).await.unwrap();
    assert_eq!((version.as_deref(), still), (Some("0.2.0"), uid.clone()), "0.2.0's DaemonSet kept");

    // `Always` notices a moved tag without a spec change.
    let stable = json!({ "image": format!("{repository}:stable"), "pullPolicy": "Always" });
    apply_agent(&client, ns, &falco_agent(ns, stable.clone(), default_config.clone(), kube_bench)).await;
    wait_degraded(&client, ns, "False", "ModulesAsSpecified").await;
    wait_for("falco from :stable (0.1.0)", Duration::from_secs(60), || async {
        Ok(falco_daemonset(&client, ns).await?.0.is_none())
    })
    .await;
    push(&v2, &format!("{repository}:stable"), &host);
    let moved = Instant::now();
    wait_for("the moved :stable tag (0.2.0)", Duration::from_secs(60), || async {
        Ok(falco_daemonset(&client, ns).await?.0.as_deref() == Some("0.2.0"))
    })
    .await;
    eprintln!(":stable moved to 0.2.0: DaemonSet updated {:.1?} after the push", moved.elapsed());

    // Restarted with the registry stopped: reconciles from its cache (a
    // config change is rendered with the cached module), and says so.
    operator.kill();
    registry.stop();
    let mut operator = Operator::start_with(&env, ns, &operator_args);
    let config = json!({ "image": "falcosecurity/falco:0.41.3-e2e" });
    apply_agent(&client, ns, &falco_agent(ns, stable, config, kube_bench)).await;
    let message = wait_degraded(&client, ns, "True", "RegistryUnavailable").await;
    assert!(message.contains("registry unreachable") && message.contains(&sha256_of(&v2)), "{message}");
    wait_for("the DaemonSet rendered from the cache", Duration::from_secs(60), || async {
        let (version, image, _) = falco_daemonset(&client, ns).await?;
        Ok(version.as_deref() == Some("0.2.0") && image == "falcosecurity/falco:0.41.3-e2e")
    })
    .await;

    Api::<SecurityAgent>::namespaced(client.clone(), ns).delete("modules", &DeleteParams::default()).await.unwrap();
    wait_for("the agent to be gone", Duration::from_secs(60), || async {
        Ok(Api::<SecurityAgent>::namespaced(client.clone(), ns)
            .get_opt("modules")
            .await
            .map_err(|e| e.to_string())?
            .is_none())
    })
    .await;
    operator.kill();
}

/// `status.features.falco.moduleSigner`.
fn falco_signer(agent: &SecurityAgent) -> Option<String> {
    agent.status.as_ref().and_then(|s| s.features.get("falco")).and_then(|f| f.module_signer.clone())
}

/// Issue 17 on a real registry and control plane: the cluster admin
/// requires modules from the registry to be signed by `release` (a cosign
/// key pair). A module signed with the cosign CLI runs, its signer in
/// status; an unsigned one (which would also trap) and one signed by
/// another key are refused before they are compiled, with the signed
/// module still running and Degraded naming the refusal, the module and
/// the expected key; once `secop feature sign` adds the release
/// signature to the moved-to module, it is picked up without a spec
/// change; a tenant's own key (a ConfigMap) is an additional requirement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_modules_signed_by_the_admins_signer_run() {
    let Some(env) = env() else { return };
    let registry_bin = std::env::var_os("SECOP_REGISTRY_BIN").map(PathBuf::from).expect("SECOP_REGISTRY_BIN");
    let cosign = std::env::var_os("SECOP_COSIGN").map(PathBuf::from).expect("SECOP_COSIGN (set by `cargo xtask test`)");
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    let run = format!("{}-{}", std::process::id(), Instant::now().elapsed().as_nanos() % 1000);
    let ns = &format!("e2e-signed-{run}");
    create_namespace(&client, ns).await;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("signed-{run}"));
    let mut registry =
        secop_test_harness::Registry::start(&registry_bin, &dir.join("registry"), secop_test_harness::free_port())
            .unwrap();
    let host = registry.host();
    let repository = format!("{host}/features/falco-signed-{}", std::process::id());
    let (v1, v2, broken) = (
        pipeline::component("feature_falco"),
        pipeline::component("feature_falco_next"),
        pipeline::component("feature_falco_broken"),
    );
    for (file, tag) in [(&v1, "1.0"), (&v2, "2.0"), (&broken, "3.0")] {
        push(file, &format!("{repository}:{tag}"), &host);
    }
    let secop = |args: &[&str], password: &str| {
        run_ok(
            Command::new(env!("CARGO_BIN_EXE_secop"))
                .args(args)
                .env("COSIGN_PASSWORD", password)
                .env("SECOP_CACHE_DIR", dir.join("cli-cache")),
        )
    };
    // The release key from cosign; another publisher's from secop.
    let (release, other) = (dir.join("release"), dir.join("other"));
    std::fs::create_dir_all(&release).unwrap();
    run_ok(Command::new(&cosign).current_dir(&release).env("COSIGN_PASSWORD", "release-pw").arg("generate-key-pair"));
    secop(&["feature", "keygen", "--dir", other.to_str().unwrap()], "other-pw");
    let release_pub = std::fs::read_to_string(release.join("cosign.pub")).unwrap();
    // 1.0 signed by release with the cosign CLI; 2.0 by the other key only.
    run_ok(Command::new(&cosign).env("COSIGN_PASSWORD", "release-pw").args([
        "sign",
        "--key",
        release.join("cosign.key").to_str().unwrap(),
        "--tlog-upload=false",
        "--yes",
        &format!("{repository}:1.0"),
    ]));
    let sign = |tag: &str, key: &Path, password: &str| {
        secop(
            &[
                "feature",
                "sign",
                &format!("{repository}:{tag}"),
                "--signing-key",
                key.join("cosign.key").to_str().unwrap(),
                "--plain-http",
                &host,
            ],
            password,
        )
    };
    sign("2.0", &other, "other-pw");

    let indented: String = release_pub.lines().map(|l| format!("      {l}\n")).collect();
    let policy = policy_file(
        "signed",
        &format!(
            "modules:\n  signers:\n  - name: release\n    namespaces: [{ns}]\n    publicKey: |\n{indented}  allowed:\n  - {{image: \"{host}/features/\", clusterScoped: true, hostAccess: true, signers: [release]}}\nimages:\n  allowed: [docker.io/falcosecurity/falco]\n"
        ),
    );
    let operator_args =
        ["--plain-http", host.as_str(), "--module-poll-seconds", "2", "--policy", policy.to_str().unwrap()];
    let mut operator = Operator::start_with(&env, ns, &operator_args);
    let agent = |module: Value| {
        json!({
            "apiVersion": "security.example.io/v1alpha1",
            "kind": "SecurityAgent",
            "metadata": { "name": "modules", "namespace": ns },
            "spec": { "features": [{ "name": "falco", "module": module }] },
        })
    };

    // Signed by release (cosign CLI): runs, the signer in status.
    apply_agent(&client, ns, &agent(json!({ "image": format!("{repository}:1.0") }))).await;
    wait_ready(&client, ns, "modules", Duration::from_secs(180)).await;
    let status = agent_status(&client, ns, "modules").await.unwrap();
    assert_eq!(falco_module(&status), (Some(format!("{repository}:1.0")), Some(sha256_of(&v1))));
    let signer = falco_signer(&status).unwrap_or_default();
    assert!(signer.starts_with("release (key sha256:"), "{signer}");
    let (_, _, uid) = falco_daemonset(&client, ns).await.unwrap();

    // Unsigned (and broken): refused before it is compiled; 1.0 runs on.
    apply_agent(&client, ns, &agent(json!({ "image": format!("{repository}:3.0") }))).await;
    let message = wait_degraded(&client, ns, "True", "SignatureMissing").await;
    for expected in [
        &format!("{repository}:3.0"),
        "no signature",
        "expected one by release (key sha256:",
        "manifest sha256:",
        &format!("rolled back to {repository}:1.0"),
    ] {
        assert!(message.contains(expected), "`{expected}` not in: {message}");
    }
    assert!(!message.contains("Trap"), "refused before it ran: {message}");
    let status = agent_status(&client, ns, "modules").await.unwrap();
    assert_eq!(falco_module(&status), (Some(format!("{repository}:1.0")), Some(sha256_of(&v1))));
    assert_eq!(falco_signer(&status), Some(signer.clone()), "status names who signed the module that runs");
    assert_eq!(falco_daemonset(&client, ns).await.unwrap().2, uid, "nothing deleted or recreated");

    // Signed, but by another key: refused the same way.
    let always = json!({ "image": format!("{repository}:2.0"), "pullPolicy": "Always" });
    apply_agent(&client, ns, &agent(always.clone())).await;
    let message = wait_degraded(&client, ns, "True", "SignatureInvalid").await;
    for expected in ["none of its 1 signature(s) is by release", "cluster policy modules.allowed[0].signers"] {
        assert!(message.contains(expected), "`{expected}` not in: {message}");
    }
    assert_eq!(falco_daemonset(&client, ns).await.unwrap().0, None, "1.0's DaemonSet stays");

    // The release signature added by `secop feature sign` with the cosign
    // key file: picked up without a spec change, 2.0 swapped in.
    sign("2.0", &release, "release-pw");
    wait_for("falco 2.0 once signed by release", Duration::from_secs(60), || async {
        Ok(falco_daemonset(&client, ns).await?.0.as_deref() == Some("0.2.0"))
    })
    .await;
    wait_degraded(&client, ns, "False", "ModulesAsSpecified").await;
    let status = agent_status(&client, ns, "modules").await.unwrap();
    assert_eq!(falco_module(&status).1, Some(sha256_of(&v2)));
    assert!(falco_signer(&status).is_some_and(|s| s.starts_with("release (key sha256:")));

    // The tenant's own key (a ConfigMap) must have signed too.
    let team_keys: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "team-keys", "namespace": ns },
        "data": { "cosign.pub": std::fs::read_to_string(other.join("cosign.pub")).unwrap() },
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), ns).create(&PostParams::default(), &team_keys).await.unwrap();
    let mut both = always;
    both["verify"] = json!({ "publicKeys": [{ "configMapName": "team-keys" }] });
    apply_agent(&client, ns, &agent(both)).await;
    wait_for("both signers in status", Duration::from_secs(60), || async {
        let status = agent_status(&client, ns, "modules").await?;
        let observed = status.status.as_ref().and_then(|s| s.observed_generation) == status.metadata.generation;
        Ok(observed
            && falco_signer(&status).is_some_and(|s| s.contains(&format!("ConfigMap {ns}/team-keys/cosign.pub"))))
    })
    .await;

    delete_agent(&client, ns, "modules").await;
    operator.kill();
    registry.stop();
}

/// Issue 17's author's kit, end to end: a Rust and a Python feature
/// scaffolded by `secop feature new` build with their README's command,
/// pass `--conformance`, are pushed, signed and given provenance by `secop
/// feature push --signing-key`, and run on the control plane under a
/// cluster policy that requires the author's signature: their objects
/// applied, their signer in status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_features_are_signed_pushed_and_run_on_the_control_plane() {
    let Some(env) = env() else { return };
    let registry_bin = std::env::var_os("SECOP_REGISTRY_BIN").map(PathBuf::from).expect("SECOP_REGISTRY_BIN");
    // The builds touch no cluster: before the lock.
    let rust = scaffold::build_rust("port_scan", &scaffold::project_dir("e2e-rust"));
    let python = scaffold::build_python("audit_trail", &scaffold::project_dir("e2e-python"));
    for module in [&rust, &python] {
        scaffold::passes_conformance(module);
    }
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    let run = format!("{}-{}", std::process::id(), Instant::now().elapsed().as_nanos() % 1000);
    let ns = &format!("e2e-authors-{run}");
    create_namespace(&client, ns).await;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("authors-{run}"));
    let mut registry =
        secop_test_harness::Registry::start(&registry_bin, &dir.join("registry"), secop_test_harness::free_port())
            .unwrap();
    let host = registry.host();
    let secop = |args: &[&str]| {
        run_ok(
            Command::new(env!("CARGO_BIN_EXE_secop"))
                .args(args)
                .env("COSIGN_PASSWORD", "author-pw")
                .env("SECOP_CACHE_DIR", dir.join("cli-cache")),
        )
    };
    let keys = dir.join("keys");
    secop(&["feature", "keygen", "--dir", keys.to_str().unwrap()]);
    let signing_key = keys.join("cosign.key");
    let images = [("port_scan", &rust), ("audit_trail", &python)].map(|(id, module)| {
        let image = format!("{host}/authors/{}:0.1.0", id.replace('_', "-"));
        let pushed = secop(&[
            "feature",
            "push",
            module.to_str().unwrap(),
            &image,
            "--signing-key",
            signing_key.to_str().unwrap(),
            "--plain-http",
            &host,
        ]);
        assert!(pushed.contains("signature: ") && pushed.contains("provenance: "), "{pushed}");
        (id, image)
    });

    let indented: String =
        std::fs::read_to_string(keys.join("cosign.pub")).unwrap().lines().map(|l| format!("      {l}\n")).collect();
    let policy = policy_file(
        "authors",
        &format!(
            "modules:\n  signers:\n  - name: author\n    namespaces: [{ns}]\n    publicKey: |\n{indented}  allowed:\n  - {{image: \"{host}/authors/\", signers: [author]}}\n"
        ),
    );
    let mut operator =
        Operator::start_with(&env, ns, &["--plain-http", host.as_str(), "--policy", policy.to_str().unwrap()]);
    let features: Vec<Value> = images
        .iter()
        .map(|(id, image)| json!({ "name": id, "module": { "image": image }, "config": { "message": format!("from the {id} author") } }))
        .collect();
    let agent = json!({
        "apiVersion": "security.example.io/v1alpha1",
        "kind": "SecurityAgent",
        "metadata": { "name": "authors", "namespace": ns },
        "spec": { "features": features },
    });
    apply_agent(&client, ns, &agent).await;
    wait_ready(&client, ns, "authors", Duration::from_secs(180)).await;
    let status = agent_status(&client, ns, "authors").await.unwrap();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), ns);
    for (id, image) in &images {
        let settings = config_maps.get(&format!("{}-settings", id.replace('_', "-"))).await.unwrap();
        assert_eq!(settings.data.unwrap()["message"], format!("from the {id} author"));
        let feature = &status.status.as_ref().unwrap().features[*id];
        assert_eq!(feature.module_image.as_deref(), Some(image.as_str()), "{feature:?}");
        let signer = feature.module_signer.clone().unwrap_or_default();
        assert!(signer.starts_with("author (key sha256:"), "{id}: {signer}");
    }

    delete_agent(&client, ns, "authors").await;
    operator.kill();
    registry.stop();
}

/// A browser session on the console through chromedriver (Debian's
/// chromium-driver, the same version as its chromium).
struct Browser {
    client: fantoccini::Client,
    driver: Child,
    shots: PathBuf,
}

impl Browser {
    async fn start(shots: &Path) -> Self {
        let chromium = std::env::var("SECOP_CHROMIUM").expect("SECOP_CHROMIUM (set by `cargo xtask test`)");
        let chromedriver = std::env::var("SECOP_CHROMEDRIVER").expect("SECOP_CHROMEDRIVER (set by `cargo xtask test`)");
        let port = secop_test_harness::free_port();
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromedriver-{port}.log"));
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromium-profile-{port}"));
        // The flags this machine's closed network needs (its probe notes):
        // no background connections, no sandbox as root, a fresh profile.
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000", format!("--user-data-dir={}", profile.display()),
            ] }),
        );
        let mut last = String::new();
        for _ in 0..50 {
            match fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => {
                    std::fs::create_dir_all(shots).unwrap();
                    return Self { client, driver, shots: shots.to_path_buf() };
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("no chromedriver session: {last} (log: {})", log.display());
    }

    async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The text of the first element matching `css` (waiting for it).
    async fn text(&self, css: &str) -> String {
        let found =
            self.client.wait().at_most(Duration::from_secs(20)).for_element(fantoccini::Locator::Css(css)).await;
        match found {
            Ok(element) => element.text().await.unwrap(),
            Err(e) => {
                let url = self.client.current_url().await.unwrap();
                let page = self.client.source().await.unwrap_or_default();
                panic!("no `{css}` on {url}: {e}\n{page}")
            }
        }
    }

    /// The text of `css` once it contains `expected` (after a click or a
    /// form post, the page before may still be the one shown for a moment).
    async fn text_once(&self, css: &str, expected: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.client.find(fantoccini::Locator::Css(css)).await;
            let text = match found {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(expected) {
                return text;
            }
            if Instant::now() > deadline {
                let url = self.client.current_url().await.unwrap();
                panic!("`{css}` on {url} never contained `{expected}`; last: {text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An attribute of every element matching `css`.
    async fn attributes(&self, css: &str, attribute: &str) -> Vec<String> {
        let mut out = vec![];
        for element in self.client.find_all(fantoccini::Locator::Css(css)).await.unwrap() {
            out.push(element.attr(attribute).await.unwrap().unwrap_or_default());
        }
        out
    }

    /// The text of every element matching `css`.
    async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = vec![];
        for element in self.client.find_all(fantoccini::Locator::Css(css)).await.unwrap() {
            out.push(element.text().await.unwrap());
        }
        out
    }

    /// The DOM text of every element matching `css`, shown or not (a
    /// closed <details>).
    async fn contents(&self, css: &str) -> Vec<String> {
        let mut out = vec![];
        for element in self.client.find_all(fantoccini::Locator::Css(css)).await.unwrap() {
            out.push(element.prop("textContent").await.unwrap().unwrap_or_default());
        }
        out
    }

    async fn count(&self, css: &str) -> usize {
        self.client.find_all(fantoccini::Locator::Css(css)).await.unwrap().len()
    }

    async fn log_in(&self, base: &str, token: &str) {
        self.open(&format!("{base}/login")).await;
        let field = self.client.wait().for_element(fantoccini::Locator::Css("input#token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        self.client.find(fantoccini::Locator::Css("form.login button")).await.unwrap().click().await.unwrap();
    }

    /// A PNG of the page as it is now: in the target dir, and under
    /// docs/screenshots when SECOP_UPDATE_SCREENSHOTS=1.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), &png).unwrap();
        if std::env::var("SECOP_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(repo("docs/screenshots")).unwrap();
            std::fs::write(repo(&format!("docs/screenshots/{name}.png")), &png).unwrap();
        }
    }

    async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `secop console`, as its own process, with the identity of `kubeconfig`.
struct ConsoleProcess {
    child: Child,
    url: String,
}

impl ConsoleProcess {
    fn start(kubeconfig: &Path, extra: &[&str]) -> Self {
        let port = secop_test_harness::free_port();
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("console-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_secop"))
            .args(["console", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start secop console");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the console did not listen: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, url }
    }
}

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// When a test fails halfway, its agent's node sensors must not outlive
/// it: other tests' agents on the same nodes would be refused as
/// duplicates. On a panic, the agent's finalizer is dropped (its operator
/// may be gone) and its namespace deleted, with everything in it.
struct RemoveOnPanic {
    kubeconfig: PathBuf,
    namespace: String,
    agent: String,
}

impl Drop for RemoveOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let kubectl = |args: &[&str]| {
            let _ = Command::new(kubectl()).arg("--kubeconfig").arg(&self.kubeconfig).args(args).status();
        };
        let finalizers = r#"{"metadata":{"finalizers":null}}"#;
        kubectl(&["-n", &self.namespace, "patch", "securityagent", &self.agent, "--type=merge", "-p", finalizers]);
        kubectl(&["delete", "namespace", &self.namespace, "--wait=false"]);
    }
}

/// The bearer token in a kubeconfig that `service_account_kubeconfig` wrote.
fn token_of(kubeconfig: &Path) -> String {
    let config: Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    config["users"][0]["user"]["token"].as_str().unwrap().to_string()
}

/// Issue 18 in a real browser: `secop console`, with the read-only
/// identity the chart gives it, on the real control plane and a real
/// Elasticsearch loaded with the replay, the posture engine and a module
/// rollback. Headless Chromium logs in with a Kubernetes token and reads
/// every page: the agent's module, rollback and Events; the replayed
/// counts per tool in the event panels (from the fixtures themselves); the
/// deleted risky pod's alerts resolved with their evidence; the CTEM
/// checklist as `secop ctem-report` computes it and the validation run's
/// results. An unknown agent, a revoked token, a user without access and
/// an unreachable Elasticsearch each get a clear message. Screenshots of
/// every page go to docs/screenshots (SECOP_UPDATE_SCREENSHOTS=1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_grid_in_a_real_browser() {
    let Some(env) = env() else { return };
    let es_url = std::env::var("SECOP_E2E_ES_URL").expect("SECOP_E2E_ES_URL (set by `cargo xtask test`)");
    let otelcol = std::env::var_os("SECOP_OTELCOL").map(PathBuf::from).expect("SECOP_OTELCOL");
    let registry_bin = std::env::var_os("SECOP_REGISTRY_BIN").map(PathBuf::from).expect("SECOP_REGISTRY_BIN");
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    let run = std::process::id();
    let ns = &format!("e2e-console-{run}");
    create_namespace(&client, ns).await;
    let _cleanup = RemoveOnPanic { kubeconfig: env.kubeconfig.clone(), namespace: ns.clone(), agent: "grid".into() };
    let dir = pipeline::scratch("console");
    let es = secop_elastic::Elastic::new(&secop_elastic::ElasticConfig::new(vec![es_url.clone()])).unwrap();

    // Events: the replay through the real collectors.
    let replay = pipeline::start_replay(&otelcol, &es_url, &format!("console-{run}"), &dir);
    let expected = pipeline::expected_per_tool(&replay.fixtures);
    let per_tool = || async {
        let _ = es.refresh(&replay.events).await;
        let answer = es
            .search(
                &replay.events,
                &json!({ "size": 0, "aggs": { "t": { "terms": { "field": "labels.security_tool" } } } }),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok::<BTreeMap<String, usize>, String>(
            answer["aggregations"]["t"]["buckets"]
                .as_array()
                .map(|b| {
                    b.iter()
                        .map(|b| (b["key"].as_str().unwrap().to_string(), b["doc_count"].as_u64().unwrap() as usize))
                        .collect()
                })
                .unwrap_or_default(),
        )
    };
    wait_for("the replayed runtime events indexed", Duration::from_secs(180), || async {
        let counts = per_tool().await?;
        Ok(["falco", "tetragon"].iter().all(|t| counts.get(*t) == expected.get(*t)))
    })
    .await;

    // Posture: the engine on the same indices; the risky pod comes and goes.
    let posture_rules =
        pipeline::render_file(&repo("deploy/samples/securityagent_full.yaml"), &["--feature", "posture"])["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == "ClusterRole")
            .unwrap()["rules"]
            .clone();
    let reader = service_account_kubeconfig(
        &client,
        &env.kubeconfig,
        ns,
        "posture",
        &posture_rules,
        &dir.join("kubeconfig-posture"),
    )
    .await;
    let mut engine =
        PostureEngine::start(&reader, &es_url, &format!("console-{run}"), &replay.inventory, &replay.events);
    wait_for("the first list of every kind", Duration::from_secs(120), || async { Ok(engine.lists_complete() >= 15) })
        .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let risky = format!("risky-{run}");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": { "name": risky },
        "spec": { "automountServiceAccountToken": false, "containers": [{ "name": "risky", "image": "nginx:1.27", "securityContext": { "privileged": true, "runAsUser": 0 } }] },
    }))
    .unwrap();
    let uid = pods.create(&PostParams::default(), &pod).await.unwrap().metadata.uid.unwrap();
    let of_pod = json!({ "term": { "kubernetes.resource.uid": uid } });
    wait_for("the risky pod's alerts", Duration::from_secs(30), || async {
        Ok(search(&es, &replay.events, of_pod.clone()).await.len() >= 2)
    })
    .await;
    pods.delete(&risky, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    wait_for("the risky pod's alerts resolved", Duration::from_secs(60), || async {
        let alerts = search(&es, &replay.events, of_pod.clone()).await;
        Ok(!alerts.is_empty() && alerts.iter().all(|a| a["finding"]["status"] == "resolved"))
    })
    .await;
    let risky_alerts = search(&es, &replay.events, of_pod.clone()).await.len();
    engine.stop();

    // An agent whose falco module is rolled back: 1.0 runs, the broken 3.0 is refused.
    let mut registry =
        secop_test_harness::Registry::start(&registry_bin, &dir.join("registry"), secop_test_harness::free_port())
            .unwrap();
    let host = registry.host();
    let repository = format!("{host}/features/falco-console-{run}");
    push(&pipeline::component("feature_falco"), &format!("{repository}:1.0"), &host);
    push(&pipeline::component("feature_falco_broken"), &format!("{repository}:3.0"), &host);
    let policy = policy_file(
        "console",
        &format!(
            "modules:\n  allowed:\n  - {{image: \"{host}/features/\", clusterScoped: true, hostAccess: true}}\nimages:\n  allowed: [docker.io/falcosecurity/falco]\n"
        ),
    );
    let mut operator =
        Operator::start_with(&env, ns, &["--plain-http", host.as_str(), "--policy", policy.to_str().unwrap()]);
    let agent = |tag: &str| {
        json!({
            "apiVersion": "security.example.io/v1alpha1", "kind": "SecurityAgent",
            "metadata": { "name": "grid", "namespace": ns },
            "spec": { "features": [{ "name": "falco", "module": { "image": format!("{repository}:{tag}") } }] },
        })
    };
    apply_agent(&client, ns, &agent("1.0")).await;
    wait_ready(&client, ns, "grid", Duration::from_secs(180)).await;
    apply_agent(&client, ns, &agent("3.0")).await;
    let degraded = wait_degraded_named(&client, ns, "grid", "ModuleRolledBack").await;

    // A validation run over the replay, written to the agent's status by
    // the runner's own identity (as the spec.tests CronJob does).
    let runner_rules = json!([
        { "apiGroups": ["security.example.io"], "resources": ["securityagents"], "verbs": ["get"] },
        { "apiGroups": ["security.example.io"], "resources": ["securityagents/status"], "verbs": ["patch"] },
    ]);
    let runner = service_account_kubeconfig(
        &client,
        &env.kubeconfig,
        ns,
        "ctem-validation",
        &runner_rules,
        &dir.join("kubeconfig-runner"),
    )
    .await;
    let day = "2026-11-20T00:00:00Z";
    let validated = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args([
            "validate",
            "--endpoint",
            &es_url,
            "--index-events",
            &replay.events,
            "--index-inventory",
            &replay.inventory,
        ])
        .args(["--pod", "ctem-testbox", "--since", day, "--inventory-since", day, "--timeout-seconds", "0"])
        .args(["--agent", &format!("{ns}/grid")])
        .env("KUBECONFIG", &runner)
        .output()
        .unwrap();
    assert!(
        validated.status.code().is_some_and(|c| c <= 1),
        "secop validate: {}",
        String::from_utf8_lossy(&validated.stderr)
    );
    es.refresh(&replay.events).await.unwrap();

    // The console, with the chart's read-only rules; a viewer may list agents.
    let console_rules = console_cluster_rules();
    let identity = service_account_kubeconfig(
        &client,
        &env.kubeconfig,
        ns,
        "console",
        &console_rules,
        &dir.join("kubeconfig-console"),
    )
    .await;
    let indices = [
        "--index-inventory",
        replay.inventory.as_str(),
        "--index-events",
        replay.events.as_str(),
        "--index-vulnerabilities",
        replay.vuln.as_str(),
    ];
    let mut args = vec!["--endpoint", es_url.as_str()];
    args.extend(indices);
    let console = ConsoleProcess::start(&identity, &args);
    let viewer_rules =
        json!([{ "apiGroups": ["security.example.io"], "resources": ["securityagents"], "verbs": ["get", "list"] }]);
    let viewer = token_of(
        &service_account_kubeconfig(
            &client,
            &env.kubeconfig,
            ns,
            "viewer",
            &viewer_rules,
            &dir.join("kubeconfig-viewer"),
        )
        .await,
    );
    let base = console.url.as_str();
    let browser = Browser::start(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")).await;

    // Not logged in: the login page.
    browser.open(&format!("{base}/agents")).await;
    assert!(browser.text("label[for=token]").await.contains("Kubernetes bearer token"));
    browser.log_in(base, &viewer).await;

    // Agents: the rollback and the module that runs.
    let row = format!("tr[data-agent='{ns}/grid']");
    assert!(browser.text(&format!("{row} td:nth-child(5)")).await.contains("ModuleRolledBack"));
    assert!(browser.text("header .user").await.contains(&format!("system:serviceaccount:{ns}:viewer")));
    browser.screenshot("agents").await;
    browser.open(&format!("{base}/agents/{ns}/grid")).await;
    let falco = browser.text("tr[data-feature=falco]").await;
    assert!(falco.contains(&format!("{repository}:1.0")), "the last good module runs: {falco}");
    assert!(falco.contains(&sha256_of(&pipeline::component("feature_falco"))), "{falco}");
    let rollback = browser.text("section.rollback").await;
    assert!(rollback.contains("ModuleRolledBack") && rollback.contains(&format!("{repository}:3.0")), "{rollback}");
    assert!(degraded.contains(&format!("rolled back to {repository}:1.0")), "{degraded}");
    assert!(rollback.contains(&format!("rolled back to {repository}:1.0")), "{rollback}");
    assert!(
        browser.attributes("table.events tr[data-reason]", "data-reason").await.iter().any(|r| r == "ModuleRolledBack")
    );
    browser.screenshot("agent").await;

    // Events: the panels show the replayed counts.
    browser.open(&format!("{base}/events?range=all")).await;
    browser.text("#over-time svg").await;
    let legend = |kind: &'static str| {
        let browser = &browser;
        async move {
            let keys = browser.attributes(&format!("table[data-legend={kind}] tr"), "data-key").await;
            let counts = browser.attributes(&format!("table[data-legend={kind}] tr"), "data-count").await;
            keys.into_iter()
                .zip(counts.into_iter().map(|c| c.parse::<usize>().unwrap()))
                .collect::<BTreeMap<String, usize>>()
        }
    };
    let tools = legend("tool").await;
    for tool in ["falco", "tetragon"] {
        assert_eq!(tools.get(tool), expected.get(tool), "{tool} in the panel vs the fixtures: {tools:?}");
    }
    assert_eq!(tools, per_tool().await.unwrap(), "every tool's count as Elasticsearch has it");
    let total: usize = tools.values().sum();
    assert_eq!(browser.text("[data-figure=events-total] .value").await, total.to_string());
    assert_eq!(legend("severity").await.values().sum::<usize>(), total, "the donut covers every event with a severity");
    assert!(legend("namespace").await.contains_key("ctem-test"), "the scenario namespace is among the top ones");
    assert_eq!(browser.count("table.events tbody tr").await, total.min(50), "one page of the table");
    browser.screenshot("events").await;
    browser.open(&format!("{base}/events?range=all&q=ctem-testbox")).await;
    let pods_shown = browser.texts("table.events tbody td.kubernetes-pod-name").await;
    assert!(!pods_shown.is_empty() && pods_shown.iter().all(|p| p == "ctem-testbox"), "{pods_shown:?}");

    // Inventory and alerts: the deleted risky pod's alerts resolved, with evidence.
    browser.open(&format!("{base}/posture?status=resolved")).await;
    let resource = format!("Pod {ns}/{risky}");
    let rows = format!("table.alerts tr[data-resource='{resource}']");
    assert_eq!(browser.count(&rows).await, risky_alerts);
    assert!(browser.attributes(&rows, "data-status").await.iter().all(|s| s == "resolved"));
    let evidence = browser.contents(&format!("{rows} td.evidence pre")).await;
    assert!(evidence.iter().any(|e| e.contains("\"privileged\": true")), "{evidence:?}");
    assert!(browser.text(&format!("{rows} .resolution")).await.contains("resource deleted"));
    let deleted_pods: usize =
        browser.attributes("table.inventory tr[data-kind=Pod]", "data-deleted").await[0].parse().unwrap();
    assert!(deleted_pods >= 1);
    browser.screenshot("posture").await;

    // CTEM: the checklist as `secop ctem-report` computes it, the validation run.
    let report = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args(["ctem-report", "--endpoint", &es_url, "-o", "json"])
        .args(indices)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    browser.open(&format!("{base}/ctem")).await;
    browser.text("table.checklist").await;
    let outcomes: BTreeMap<String, String> = browser
        .attributes("table.checklist tr[data-check]", "data-check")
        .await
        .into_iter()
        .zip(browser.attributes("table.checklist tr[data-check]", "data-outcome").await)
        .collect();
    let cli: BTreeMap<String, String> = report
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let outcome = match c["outcome"].as_str().unwrap() {
                "PASS" => "PASS",
                "FAIL" => "FAIL",
                _ => "N/A",
            };
            (c["id"].as_str().unwrap().to_string(), outcome.to_string())
        })
        .collect();
    assert_eq!(outcomes, cli, "the console's checklist is the CLI's");
    let scenario = |name: &str| format!("article.run[data-agent='{ns}/grid'] tr[data-scenario={name}]");
    // The agent enables falco only: the escape scenario lacks falco's detection.
    assert_eq!(browser.attributes(&scenario("validate-shell"), "data-result").await, ["Passed"]);
    assert_eq!(browser.attributes(&scenario("validate-container-escape"), "data-result").await, ["Failed"]);
    assert!(
        browser.text(&scenario("validate-container-escape")).await.ends_with("falco"),
        "the missing detection is named"
    );
    browser.screenshot("ctem").await;

    // Bad input: an unknown agent, a user without access, a revoked token.
    browser.open(&format!("{base}/agents/{ns}/nope")).await;
    assert!(browser.text(".problem").await.contains(&format!("There is no SecurityAgent nope in namespace {ns}")));
    browser.client.find(fantoccini::Locator::Css("form.logout button")).await.unwrap().click().await.unwrap();
    browser.text_once(".problem", "Logged out").await;
    let nobody = token_of(
        &service_account_kubeconfig(&client, &env.kubeconfig, ns, "nobody", &json!([]), &dir.join("kubeconfig-nobody"))
            .await,
    );
    browser.log_in(base, &nobody).await;
    browser.text_once(".problem", &format!("system:serviceaccount:{ns}:nobody may not list SecurityAgents")).await;
    let revoked = token_of(
        &service_account_kubeconfig(
            &client,
            &env.kubeconfig,
            ns,
            "revoked",
            &viewer_rules,
            &dir.join("kubeconfig-revoked"),
        )
        .await,
    );
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns)
        .delete("revoked", &DeleteParams::default())
        .await
        .unwrap();
    browser.log_in(base, &revoked).await;
    browser.text_once(".problem", "The token was not accepted").await;
    // An expired token: signed with the test control plane's own
    // service-account key (target/test-cluster/sa.key), right in every
    // claim but its expiry, as one issued an hour ago for ten minutes.
    let viewer_uid = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns)
        .get("viewer")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({
        "iss": "https://kubernetes.default.svc", "aud": ["https://kubernetes.default.svc"],
        "sub": format!("system:serviceaccount:{ns}:viewer"),
        "iat": now - 3600, "nbf": now - 3600, "exp": now - 3000,
        "kubernetes.io": { "namespace": ns, "serviceaccount": { "name": "viewer", "uid": viewer_uid } },
    });
    let signing_key = std::fs::read(env.kubeconfig.parent().unwrap().join("sa.key")).unwrap();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&signing_key).unwrap(),
    )
    .unwrap();
    browser.log_in(base, &expired).await;
    // The revoked token's page says the same; wait for the expiry's own.
    browser.text_once(".problem", "expired").await;
    browser.screenshot("error-token").await;

    // Elasticsearch unreachable: the pages say so, the agents still show.
    let closed = format!("http://127.0.0.1:{}", secop_test_harness::free_port());
    let mut args = vec!["--endpoint", closed.as_str(), "--auth", "none"];
    args.extend(indices);
    let offline = ConsoleProcess::start(&identity, &args);
    browser.open(&format!("{}/events", offline.url)).await;
    assert!(browser.text(".problem").await.contains(&format!("Elasticsearch at {closed} is unreachable")));
    browser.screenshot("error-elasticsearch").await;
    browser.open(&format!("{}/agents", offline.url)).await;
    browser.text(&row).await;

    browser.stop().await;
    drop((console, offline));
    delete_agent(&client, ns, "grid").await;
    operator.kill();
    registry.stop();
}

/// The chart's ClusterRole for the console (console.enabled), its rules.
fn console_cluster_rules() -> Value {
    let helm = std::env::var_os("SECOP_HELM").expect("SECOP_HELM (set by `cargo xtask test`)");
    let out = Command::new(helm)
        .args([
            "template",
            "secop",
            &repo("deploy/helm/security-operator").to_string_lossy(),
            "--set",
            "console.enabled=true",
            "--kube-version",
            "v1.34.4",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| Value::deserialize(d).ok())
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"].as_str().is_some_and(|n| n.ends_with("-console")))
        .expect("the console's ClusterRole in the chart")["rules"]
        .clone()
}

/// Wait until the agent `name` is Degraded with `reason`; its message.
async fn wait_degraded_named(client: &Client, namespace: &str, name: &str, reason: &str) -> String {
    wait_reason(client, namespace, name, "Degraded", reason).await.1
}

/// Wait until the agent's condition `type_` has `reason` for its current
/// generation; returns (status, message).
async fn wait_reason(client: &Client, namespace: &str, name: &str, type_: &str, reason: &str) -> (String, String) {
    let found = || async {
        let agent = agent_status(client, namespace, name).await?;
        let generation = agent.metadata.generation;
        let c = agent.status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == type_));
        Ok::<_, String>(
            c.filter(|c| c.reason == reason && c.observed_generation == generation).map(|c| (c.status, c.message)),
        )
    };
    wait_for(&format!("{namespace}/{name}: {type_} with reason {reason}"), Duration::from_secs(60), || async {
        Ok(found().await?.is_some())
    })
    .await;
    found().await.unwrap().expect("stays until the next spec change")
}

/// Issue 13's hostile tenant, on the real control plane: a user who may
/// only manage SecurityAgents in their own namespace tries to reach beyond
/// it through the operator. Every attempt is refused with a condition that
/// names the field and the policy rule; the audit log shows no write of the
/// operator outside what the policy allows; the admin's agent keeps
/// reconciling and the operator keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_is_refused_and_contained() {
    let Some(env) = env() else { return };
    let registry_bin = std::env::var_os("SECOP_REGISTRY_BIN")
        .map(PathBuf::from)
        .expect("SECOP_REGISTRY_BIN (set by `cargo xtask test`)");
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    let run = std::process::id();
    let (admin_ns, tenant_ns, unlisted_ns) =
        (format!("e2e-admin-{run}"), format!("e2e-tenant-a-{run}"), format!("e2e-tenant-b-{run}"));
    for ns in [&admin_ns, &tenant_ns, &unlisted_ns] {
        create_namespace(&client, ns).await;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tenant-{run}"));
    let mut registry =
        secop_test_harness::Registry::start(&registry_bin, &dir.join("registry"), secop_test_harness::free_port())
            .unwrap();
    let host = registry.host();
    let hostile = format!("{host}/tenant/hostile:1");
    push(&pipeline::component("feature_hostile"), &hostile, &host);
    // 65 MiB of "module", just over the operator's 64 MiB limit: refused by
    // its manifest, never downloaded.
    let huge = format!("{host}/tenant/huge:1");
    let store = secop_oci::ModuleStore::new(dir.join("push-cache"), vec![host.clone()]);
    store
        .push(&huge, &vec![0u8; 65 << 20], Default::default(), secop_oci::Layout::Secop, &Default::default())
        .await
        .unwrap();

    // The admin's policy: agents of the admin's and tenant-a's namespaces;
    // modules from the tenant registry, without cluster-scoped or host
    // grants; the built-in images only.
    let policy = policy_file(
        "tenant",
        &format!("agentNamespaces: [{admin_ns}, {tenant_ns}]\nmodules:\n  allowed:\n  - image: {host}/tenant/\n"),
    );
    let mut operator =
        Operator::start_with(&env, "", &["--plain-http", host.as_str(), "--policy", policy.to_str().unwrap()]);
    // What an earlier, failed run of this test left (the admin's agent holds
    // the cluster-wide TracingPolicy): deleted, and finalized by this
    // operator, which watches every namespace.
    let all_agents: Api<SecurityAgent> = Api::all(client.clone());
    for old in all_agents.list(&ListParams::default()).await.unwrap() {
        let ns = old.metadata.namespace.clone().unwrap_or_default();
        if (ns.starts_with("e2e-admin-") || ns.starts_with("e2e-tenant-")) && !ns.ends_with(&format!("-{run}")) {
            delete_agent(&client, &ns, old.metadata.name.as_deref().unwrap()).await;
        }
    }
    let admin_agent = sample(&admin_ns);
    apply_agent(&client, &admin_ns, &admin_agent).await;
    wait_ready(&client, &admin_ns, "poc-security", Duration::from_secs(180)).await;

    let tenant_config =
        tenant_kubeconfig(&client, &env.kubeconfig, &tenant_ns, "tenant", &dir.join("tenant.kubeconfig")).await;
    let tenant = cluster::client(&tenant_config).await;
    // The tenant's own rights end at their namespace.
    let elsewhere = Api::<SecurityAgent>::namespaced(tenant.clone(), &admin_ns).list(&ListParams::default()).await;
    assert!(matches!(elsewhere, Err(kube::Error::Api(ref e)) if e.code == 403), "{elsewhere:?}");
    let attack = |spec: Value| {
        json!({
            "apiVersion": "security.example.io/v1alpha1", "kind": "SecurityAgent",
            "metadata": { "name": "attack", "namespace": tenant_ns }, "spec": spec,
        })
    };

    // Spec-level: refused before anything is fetched or rendered.
    for (spec, field, rule) in [
        (
            json!({ "features": [{ "name": "tetragon" }], "override": { "tetragon": { "image": "evil.example.invalid/tetragon:1" } } }),
            "spec.override.tetragon.image",
            "images.allowed",
        ),
        (
            json!({ "features": [{ "name": "falco", "limits": { "memoryMib": 4096 } }] }),
            "spec.features[0].limits.memoryMib",
            "limits.maxMemoryMib",
        ),
        (
            json!({ "features": [{ "name": "hostile", "module": { "image": "evil.example.invalid/hostile:1" } }] }),
            "spec.features[0].module.image",
            "modules.allowed",
        ),
    ] {
        apply_agent(&tenant, &tenant_ns, &attack(spec)).await;
        let (status, message) = wait_reason(&client, &tenant_ns, "attack", "Ready", "PolicyViolation").await;
        assert_eq!(status, "False");
        assert!(
            message.contains(field)
                && message.contains(&format!("cluster policy `{rule}`"))
                && message.contains("nothing was applied"),
            "{message}"
        );
    }
    // Object-level: the feature that renders it fails, naming the rule.
    for (spec, condition_type, field, rule) in [
        (
            json!({ "features": [{ "name": "trivy", "config": { "image": "evil.example.invalid/miner:1" } }] }),
            "TrivyReady",
            ".image",
            "images.allowed",
        ),
        (
            json!({ "features": [{ "name": "hostile", "module": { "image": hostile }, "config": { "mode": "own-cluster-role" } }] }),
            "HostileReady",
            "ClusterRole hostile-secrets",
            "modules.allowed[].clusterScoped",
        ),
        (
            json!({ "features": [{ "name": "hostile", "module": { "image": hostile }, "config": { "mode": "host-root" } }] }),
            "HostileReady",
            "volumes[0].hostPath",
            "modules.allowed[].hostAccess",
        ),
    ] {
        apply_agent(&tenant, &tenant_ns, &attack(spec)).await;
        let (status, message) = wait_reason(&client, &tenant_ns, "attack", condition_type, "PolicyViolation").await;
        assert_eq!(status, "False");
        assert!(message.contains(field) && message.contains(&format!("cluster policy `{rule}`")), "{message}");
    }
    // Bounded resources: an oversized module from an allowed source.
    apply_agent(
        &tenant,
        &tenant_ns,
        &attack(json!({ "features": [{ "name": "hostile", "module": { "image": huge } }] })),
    )
    .await;
    // (No built-in `hostile`: the condition type is the fallback `<name>Ready`.)
    let (_, message) = wait_reason(&client, &tenant_ns, "attack", "hostileReady", "ModuleTooLarge").await;
    assert!(
        message.contains(&format!("{} bytes (per its manifest)", 65 << 20))
            && message.contains(&format!("limit of {} bytes", 64 << 20)),
        "{message}"
    );
    // A second Tetragon next to the admin's: the cluster-wide TracingPolicy
    // is the admin agent's, so the tenant's agent is in Conflict naming it.
    apply_agent(&tenant, &tenant_ns, &attack(json!({ "features": [{ "name": "tetragon" }] }))).await;
    let (_, message) = wait_reason(&client, &tenant_ns, "attack", "Ready", "Conflict").await;
    assert!(message.contains("container-escape-monitor") && message.contains(&admin_ns), "{message}");
    // Node sensors are singletons: the tenant's Tetragon DaemonSet would run
    // on the admin's nodes too.
    assert!(message.contains(&format!("feature `tetragon` already runs on these nodes: DaemonSet {admin_ns}/tetragon of SecurityAgent {admin_ns}/poc-security")), "{message}");
    assert!(!exists(&Api::<DaemonSet>::namespaced(client.clone(), &tenant_ns), "tetragon").await);
    // On nodes the admin's agent does not select, the same sensor may run.
    let elsewhere_nodes = json!({ "features": [{ "name": "osquery" }], "override": { "nodeAgent": { "nodeSelector": { "type": "tenant-a-only" } } } });
    apply_agent(&tenant, &tenant_ns, &attack(elsewhere_nodes)).await;
    wait_for("the tenant's osquery on its own nodes", Duration::from_secs(60), || async {
        Ok(Api::<DaemonSet>::namespaced(client.clone(), &tenant_ns)
            .get_opt("osquery")
            .await
            .map_err(|e| e.to_string())?
            .is_some())
    })
    .await;
    Api::<SecurityAgent>::namespaced(tenant.clone(), &tenant_ns)
        .delete("attack", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the tenant's agent to be gone", Duration::from_secs(60), || async {
        Ok(Api::<SecurityAgent>::namespaced(client.clone(), &tenant_ns)
            .get_opt("attack")
            .await
            .map_err(|e| e.to_string())?
            .is_none())
    })
    .await;
    let tracing_policies = dynamic(&client, "cilium.io", "v1alpha1", "TracingPolicy", "tracingpolicies", None);
    assert!(
        exists(&tracing_policies, "container-escape-monitor").await,
        "deleting the tenant's agent leaves the admin's TracingPolicy"
    );

    // An agent in a namespace the policy does not list: refused, no finalizer.
    let mut outside = attack(json!({ "features": [{ "name": "osquery" }] }));
    outside["metadata"]["namespace"] = json!(unlisted_ns);
    apply_agent(&client, &unlisted_ns, &outside).await;
    let (_, message) = wait_reason(&client, &unlisted_ns, "attack", "Ready", "PolicyViolation").await;
    assert!(message.contains("metadata.namespace") && message.contains("agentNamespaces"), "{message}");
    let refused = agent_status(&client, &unlisted_ns, "attack").await.unwrap();
    assert!(
        refused.metadata.finalizers.unwrap_or_default().is_empty(),
        "no finalizer on an agent that is not honoured"
    );

    // Contained: nothing of the attacks exists, and the audit log has no
    // write of the operator beyond the policy: in the unlisted namespace only
    // the agent's status and Events; in tenant-a only the osquery the policy
    // allows (no Tetragon, Trivy or hostile object); no cluster-scoped object
    // of the tenant's (named `secop-<namespace>-...`) anywhere.
    assert!(!exists(&Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(client.clone()), "hostile-secrets").await);
    assert!(!exists(&Api::<DaemonSet>::namespaced(client.clone(), &tenant_ns), "hostile-root").await);
    let writes = operator_writes(&env);
    let in_ns = |w: &str, ns: &str| w.contains(&format!("/namespaces/{ns}/"));
    let outside_policy: Vec<&String> = writes
        .iter()
        .filter(|w| {
            w.contains("hostile")
                || w.contains(&format!("secop-{tenant_ns}"))
                || (in_ns(w, &unlisted_ns) && !w.contains("/securityagents/") && !w.contains("/events"))
                || (in_ns(w, &tenant_ns) && (w.contains("tetragon") || w.contains("trivy")))
        })
        .collect();
    assert!(outside_policy.is_empty(), "operator writes beyond the policy: {outside_policy:#?}");
    assert!(
        writes.iter().any(|w| in_ns(w, &tenant_ns) && w.contains("/daemonsets/osquery")),
        "the allowed agent was applied (the audit log is read)"
    );
    let mut changed = admin_agent.clone();
    changed["spec"]["override"]["falco"]["resources"]["limits"]["memory"] = json!("2100Mi");
    apply_agent(&client, &admin_ns, &changed).await;
    wait_for("the admin's change applied", Duration::from_secs(60), || async {
        let ds =
            Api::<DaemonSet>::namespaced(client.clone(), &admin_ns).get("falco").await.map_err(|e| e.to_string())?;
        let limits = ds
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers[0].resources.clone())
            .and_then(|r| r.limits)
            .unwrap_or_default();
        Ok(limits.get("memory").is_some_and(|q| q.0 == "2100Mi"))
    })
    .await;
    assert!(operator.child.try_wait().unwrap().is_none(), "the operator kept running");

    Api::<SecurityAgent>::namespaced(client.clone(), &unlisted_ns)
        .delete("attack", &DeleteParams::default())
        .await
        .unwrap();
    delete_agent(&client, &admin_ns, "poc-security").await;
    operator.kill();
    registry.stop();
}

/// `secop posture run` as a process, against the test cluster and the
/// shared Elasticsearch node.
struct PostureEngine {
    child: Child,
    log: PathBuf,
}

impl PostureEngine {
    fn start(kubeconfig: &Path, es_url: &str, cluster: &str, inventory: &str, events: &str) -> Self {
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("posture-{cluster}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_secop"))
            .args([
                "posture",
                "run",
                "--endpoint",
                es_url,
                "--cluster-name",
                cluster,
                "--index-inventory",
                inventory,
                "--index-events",
                events,
                "--flush-millis",
                "200",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("SECOP_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start secop posture run");
        Self { child, log }
    }

    /// Kinds whose first list has been applied, per the log.
    fn lists_complete(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|t| t.lines().filter(|l| l.contains("posture: list complete")).count())
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        // SIGINT: the engine flushes what it holds, then exits.
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PostureEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Documents indexed into `index` so far (creations and updates).
/// What a posture write is about: an asset's content hash and state, an
/// alert's status and evidence. A write that changes none of them is a
/// rewrite of an unchanged document.
fn what_changes(source: &Value) -> Value {
    json!([source["asset"]["hash"], source["asset"]["state"], source["finding"]["status"], source["evidence"]])
}

/// `_id` → (`_seq_no`, `_source`) of every document in `index`.
async fn doc_versions(es: &secop_elastic::Elastic, index: &str) -> BTreeMap<String, (u64, Value)> {
    es.ok(secop_elastic::Method::POST, &format!("{index}/_refresh?ignore_unavailable=true"), None).await.unwrap();
    let found = es
        .ok(
            secop_elastic::Method::POST,
            &format!("{index}/_search?ignore_unavailable=true"),
            Some(&json!({ "size": 10000, "seq_no_primary_term": true, "query": { "match_all": {} } })),
        )
        .await
        .unwrap();
    found["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let id = format!("{}/{}", h["_index"].as_str().unwrap_or_default(), h["_id"].as_str().unwrap_or_default());
            (id, (h["_seq_no"].as_u64().unwrap_or_default(), h["_source"].clone()))
        })
        .collect()
}

async fn index_total(es: &secop_elastic::Elastic, index: &str) -> u64 {
    es.refresh(index).await.unwrap();
    let stats = es.ok(secop_elastic::Method::GET, &format!("{index}/_stats/indexing"), None).await.unwrap();
    stats["_all"]["primaries"]["indexing"]["index_total"].as_u64().unwrap()
}

/// Hits of `query` (none while the index does not exist yet).
/// Each saved search of deploy/kibana/security-dashboards.ndjson, by id, as
/// the bool filter of its query-DSL filters.
fn saved_search_filters() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(repo("deploy/kibana/security-dashboards.ndjson")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|o| o["type"] == "search")
        .map(|o| {
            let source: Value =
                serde_json::from_str(o["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"].as_str().unwrap())
                    .unwrap();
            let filters: Vec<Value> = source["filter"].as_array().unwrap().iter().map(|f| f["query"].clone()).collect();
            (o["id"].as_str().unwrap().to_string(), json!({ "bool": { "filter": filters } }))
        })
        .collect()
}

async fn search(es: &secop_elastic::Elastic, index: &str, query: Value) -> Vec<Value> {
    es.ok(secop_elastic::Method::POST, &format!("{index}/_refresh?ignore_unavailable=true"), None).await.unwrap();
    let found = es
        .ok(
            secop_elastic::Method::POST,
            &format!("{index}/_search?ignore_unavailable=true"),
            Some(&json!({ "size": 100, "query": query })),
        )
        .await
        .unwrap();
    found["hits"]["hits"].as_array().unwrap().iter().map(|h| h["_source"].clone()).collect()
}

/// Issue #6 on the real control plane and a real Elasticsearch: the seed
/// plan's risky pod (docs/seed-deviations.md, posture engine) raises its
/// three alerts; deleting it marks the asset deleted
/// and resolves the alerts, which stay queryable with their evidence; a
/// restarted engine's resync of an unchanged cluster writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posture_alerts_outlive_the_risky_pod_and_an_unchanged_resync_writes_nothing() {
    let Some(env) = env() else { return };
    let es_url = std::env::var("SECOP_E2E_ES_URL").expect("SECOP_E2E_ES_URL (set by `cargo xtask test`)");
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    let es = secop_elastic::Elastic::new(&secop_elastic::ElasticConfig::new(vec![es_url.clone()])).unwrap();
    let run = std::process::id();
    let (cluster, inventory, events) =
        (format!("e2e-posture-{run}"), format!("posture-inventory-{run}"), format!("posture-events-{run}"));
    // The engine reads with exactly the read-only ClusterRole the posture
    // feature grants its Deployment, as a ServiceAccount of its own.
    let rendered = pipeline::render_file(&repo("deploy/samples/securityagent_full.yaml"), &["--feature", "posture"]);
    let role = rendered["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "ClusterRole")
        .expect("the posture feature's ClusterRole");
    let reader_kubeconfig = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kubeconfig-posture-{run}"));
    service_account_kubeconfig(
        &client,
        &env.kubeconfig,
        &format!("e2e-posture-{run}"),
        "posture",
        &role["rules"],
        &reader_kubeconfig,
    )
    .await;
    let mut engine = PostureEngine::start(&reader_kubeconfig, &es_url, &cluster, &inventory, &events);
    wait_for("the first list of every kind", Duration::from_secs(120), || async { Ok(engine.lists_complete() >= 15) })
        .await;

    // The seed plan's risky pod (docs/seed-deviations.md, posture engine): privileged, root, in the default namespace.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let name = format!("risky-{run}");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": "risky" } },
        "spec": { "automountServiceAccountToken": false, "containers": [{ "name": "risky", "image": "nginx:1.27", "securityContext": { "privileged": true, "runAsUser": 0 } }] },
    }))
    .unwrap();
    let created = Instant::now();
    let uid = pods.create(&PostParams::default(), &pod).await.unwrap().metadata.uid.unwrap();
    let of_pod = json!({ "term": { "kubernetes.resource.uid": uid } });
    wait_for("three alerts on the risky pod", Duration::from_secs(10), || async {
        Ok(search(&es, &events, of_pod.clone()).await.len() == 3)
    })
    .await;
    eprintln!("risky pod → 3 alerts searchable after {:.1?}", created.elapsed());
    let alerts = search(&es, &events, of_pod.clone()).await;
    let rules: BTreeSet<&str> = alerts.iter().map(|a| a["rule"]["id"].as_str().unwrap()).collect();
    assert_eq!(rules, BTreeSet::from(["K8S-01", "PSS-B-02", "PSS-R-04"]), "default namespace, privileged, root");
    assert!(alerts.iter().all(|a| a["finding"]["status"] == "open"
        && a["event"]["kind"] == "alert"
        && a["kubernetes"]["pod"]["name"] == name.as_str()));

    // Deleted: the asset is marked deleted, the alerts resolved, and a
    // query still returns them with their evidence.
    pods.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    wait_for("the risky pod's alerts resolved", Duration::from_secs(60), || async {
        Ok(search(&es, &events, of_pod.clone()).await.iter().filter(|a| a["finding"]["status"] == "resolved").count()
            == 3)
    })
    .await;
    let asset = search(&es, &inventory, json!({ "term": { "asset.uid": uid } })).await;
    assert_eq!(asset.len(), 1);
    assert_eq!(asset[0]["asset"]["state"], "deleted");
    assert_eq!(asset[0]["asset"]["name"], name.as_str(), "the deleted asset keeps what it was");
    let evidence = search(
        &es,
        &events,
        json!({ "bool": { "filter": [of_pod, { "term": { "evidence.securityContext.privileged": "true" } }] } }),
    )
    .await;
    assert_eq!(evidence.len(), 1, "the privileged alert, found by its evidence after the pod is gone");
    assert_eq!(evidence[0]["posture"]["resolution"], "resource deleted");
    assert_eq!(evidence[0]["finding"]["status"], "resolved");
    // The Kibana saved searches of the posture views (deploy/kibana), run as
    // their filters: the deleted pod among the assets, its alerts resolved
    // with their evidence.
    let views = saved_search_filters();
    let assets_view = search(&es, &inventory, json!({ "bool": { "filter": [views["secop-search-posture-assets"].clone(), { "term": { "asset.uid": uid } }] } })).await;
    assert!(assets_view.len() == 1 && assets_view[0]["asset"]["state"] == "deleted", "{assets_view:?}");
    let alerts_view = search(
        &es,
        &events,
        json!({ "bool": { "filter": [views["secop-search-posture-alerts"].clone(), of_pod.clone()] } }),
    )
    .await;
    assert!(
        alerts_view.len() == 3
            && alerts_view.iter().all(|a| a["finding"]["status"] == "resolved" && a.get("evidence").is_some()),
        "{alerts_view:?}"
    );

    // A restarted engine restores what the indices hold; its first list of
    // the unchanged cluster writes nothing.
    engine.stop();
    let before = (index_total(&es, &inventory).await, index_total(&es, &events).await);
    let versions_before = doc_versions(&es, &format!("{inventory},{events}")).await;
    // The same reader as before (its ServiceAccount, role and token).
    let mut engine = PostureEngine::start(&reader_kubeconfig, &es_url, &cluster, &inventory, &events);
    wait_for("the resync's lists", Duration::from_secs(120), || async { Ok(engine.lists_complete() >= 30) }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Other tests' namespaces may still be going away meanwhile (their
    // deletion is asynchronous): the resync rightly records those objects.
    // What it must never do is rewrite a document whose content did not
    // change (an unchanged asset or alert written again).
    let versions_after = doc_versions(&es, &format!("{inventory},{events}")).await;
    let mut rewritten = vec![];
    for (id, (seq_no, source)) in &versions_after {
        let Some((seq_before, source_before)) = versions_before.get(id) else {
            eprintln!("new since the restart (a new object): {id}");
            continue;
        };
        if seq_no == seq_before {
            continue;
        }
        if what_changes(source) == what_changes(source_before) {
            rewritten.push(format!("{id}: {source}"));
        } else {
            eprintln!("changed since the restart (the object changed): {id}");
        }
    }
    assert!(rewritten.is_empty(), "the resync rewrote unchanged documents:\n{}", rewritten.join("\n"));
    let after = (index_total(&es, &inventory).await, index_total(&es, &events).await);
    eprintln!("index operations by the resync: {} inventory, {} events", after.0 - before.0, after.1 - before.1);
    engine.stop();
}

/// Issue 13: one malformed VulnerabilityReport (an entry with an empty
/// vulnerabilityID, which the CRD's `required` lets through, and one whose
/// finding id would exceed Elasticsearch's 512-byte `_id`) does not stop
/// `secop trivy-sync`: the malformed entry is skipped and named, the exit
/// code says so, and every other finding is written. Reads the reports
/// with exactly the ClusterRole the trivy feature grants its sync job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_vulnerability_report_is_skipped_and_named_the_rest_is_synced() {
    let Some(env) = env() else { return };
    let es_url = std::env::var("SECOP_E2E_ES_URL").expect("SECOP_E2E_ES_URL (set by `cargo xtask test`)");
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    let run = std::process::id();
    let ns = &format!("e2e-trivy-{run}");
    create_namespace(&client, ns).await;

    // The VulnerabilityReport CRD and the sync job's ClusterRole, as the
    // trivy feature renders them.
    let rendered = pipeline::render_file(&repo("deploy/samples/securityagent_full.yaml"), &["--feature", "trivy"]);
    let objects = rendered["objects"].as_array().unwrap();
    let crd = objects
        .iter()
        .find(|o| {
            o["kind"] == "CustomResourceDefinition"
                && o["metadata"]["name"] == "vulnerabilityreports.aquasecurity.github.io"
        })
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch("vulnerabilityreports.aquasecurity.github.io", &PatchParams::apply("e2e").force(), &Patch::Apply(crd))
        .await
        .unwrap();
    let reports =
        dynamic(&client, "aquasecurity.github.io", "v1alpha1", "VulnerabilityReport", "vulnerabilityreports", Some(ns));
    let entry = |id: &str, resource: &str, severity: &str| {
        json!({
            "vulnerabilityID": id, "resource": resource, "severity": severity, "title": "t", "installedVersion": "1", "fixedVersion": "2",
            "lastModifiedDate": "2026-01-01T00:00:00Z", "publishedDate": "2026-01-01T00:00:00Z",
        })
    };
    let long_package = "p".repeat(600);
    let report = json!({
        "apiVersion": "aquasecurity.github.io/v1alpha1", "kind": "VulnerabilityReport",
        "metadata": { "name": "replicaset-web-nginx", "namespace": ns, "labels": { "trivy-operator.resource.kind": "ReplicaSet", "trivy-operator.resource.name": "web" } },
        "report": {
            "artifact": { "repository": "library/nginx", "tag": "1.25" }, "os": { "family": "debian" },
            "scanner": { "name": "Trivy", "vendor": "Aqua Security", "version": "0.58.0" },
            "summary": { "criticalCount": 2, "highCount": 1, "mediumCount": 0, "lowCount": 0, "unknownCount": 0 },
            "updateTimestamp": "2026-12-01T00:00:00Z",
            "vulnerabilities": [entry("CVE-2026-0001", "zlib1g", "CRITICAL"), entry("", "libssl3", "HIGH"), entry("CVE-2026-0002", &long_package, "CRITICAL")],
        },
    });
    wait_for("the VulnerabilityReport CRD served", Duration::from_secs(30), || async {
        Ok(reports
            .patch("replicaset-web-nginx", &PatchParams::apply("e2e").force(), &Patch::Apply(&report))
            .await
            .is_ok())
    })
    .await;
    let sync_role = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"].as_str().unwrap().ends_with("trivy-es-sync"))
        .unwrap();
    let reader = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kubeconfig-trivy-{run}"));
    service_account_kubeconfig(&client, &env.kubeconfig, ns, "trivy-es-sync", &sync_role["rules"], &reader).await;

    let index = format!("trivy-vuln-{run}");
    let out = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args([
            "trivy-sync",
            "--endpoint",
            &es_url,
            "--index",
            &index,
            "--cluster-name",
            &format!("e2e-{run}"),
            "--namespace",
            ns,
        ])
        .env("KUBECONFIG", &reader)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "partial success is not success: {stderr}");
    assert!(
        stderr.contains(&format!("{ns}/replicaset-web-nginx"))
            && stderr.contains("report.vulnerabilities[1] has no vulnerabilityID"),
        "{stderr}"
    );
    let es = secop_elastic::Elastic::new(&secop_elastic::ElasticConfig::new(vec![es_url.clone()])).unwrap();
    let found = search(&es, &index, json!({ "match_all": {} })).await;
    let mut ids: Vec<&str> = found.iter().map(|d| d["vulnerability"]["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["CVE-2026-0001", "CVE-2026-0002"], "every well-formed finding is written, the over-long one too");
    let long = found.iter().find(|d| d["vulnerability"]["id"] == "CVE-2026-0002").unwrap();
    assert!(long["finding"]["id"].as_str().unwrap().starts_with("sha256:"), "an id over 512 bytes is hashed");
    // The report would make every later cluster-wide sync (the real-node
    // test's) report it too.
    reports.delete("replicaset-web-nginx", &DeleteParams::default()).await.unwrap();
}

/// The validation runner's ServiceAccount may patch its agent's status
/// (RBAC cannot narrow that to `status.validation`); the chart's
/// ValidatingAdmissionPolicy (deploy/helm/security-operator/files/
/// validation-status-policy.yaml, applied as it is) lets it change
/// `status.validation` and nothing else, on the real API server.
#[tokio::test(flavor = "multi_thread")]
async fn the_validation_runner_may_write_status_validation_and_nothing_else() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let admin = client(&env.kubeconfig).await;
    let run = std::process::id();
    let namespace = format!("e2e-vrunner-{run}");

    // The chart's policy, under a name of this test's own (the chart's
    // name belongs to the helm release of the real-node test).
    let text =
        std::fs::read_to_string(repo("deploy/helm/security-operator/files/validation-status-policy.yaml")).unwrap();
    let name = format!("e2e-validation-status-{run}");
    apply_admission_policy(&admin, &text, &name).await;

    // The CRD's own rules refuse what the schema can check, on the API
    // server, naming the field.
    create_namespace(&admin, &namespace).await;
    let bad = json!({
        "apiVersion": "security.example.io/v1alpha1", "kind": "SecurityAgent",
        "metadata": { "name": "bad-endpoint", "namespace": namespace },
        "spec": { "features": [{ "name": "falco" }], "output": { "elasticsearch": { "endpoints": ["ftp://es:9200"] } } },
    });
    let refused = Api::<SecurityAgent>::namespaced(admin.clone(), &namespace)
        .patch("bad-endpoint", &PatchParams::apply("e2e").force(), &Patch::Apply(&bad))
        .await
        .expect_err("an ftp endpoint");
    assert!(
        refused.to_string().contains("spec.output.elasticsearch.endpoints")
            && refused.to_string().contains("every endpoint is an http:// or https:// URL"),
        "{refused}"
    );

    // An agent whose status the operator wrote (no operator runs here).
    apply_agent(&admin, &namespace, &json!({
        "apiVersion": "security.example.io/v1alpha1", "kind": "SecurityAgent",
        "metadata": { "name": "poc", "namespace": namespace },
        "spec": { "features": [{ "name": "falco" }], "tests": { "enabled": true, "scenarios": ["validate-shell"] } },
    }))
    .await;
    let agents: Api<SecurityAgent> = Api::namespaced(admin.clone(), &namespace);
    let operator_status = json!({
        "apiVersion": "security.example.io/v1alpha1", "kind": "SecurityAgent", "metadata": { "name": "poc" },
        "status": {
            "observedGeneration": 1, "summary": "1/1",
            "conditions": [{ "type": "Ready", "status": "True", "reason": "AllFeaturesReady", "message": "1/1 features ready", "lastTransitionTime": "2026-12-02T10:00:00Z" }],
        },
    });
    agents
        .patch_status("poc", &PatchParams::apply("security-operator-status").force(), &Patch::Apply(&operator_status))
        .await
        .unwrap();

    // The runner: ServiceAccount `ctem-validation` with the feature's rules.
    let rules = json!([
        { "apiGroups": ["security.example.io"], "resources": ["securityagents"], "verbs": ["get"] },
        { "apiGroups": ["security.example.io"], "resources": ["securityagents/status"], "verbs": ["patch"] },
    ]);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kubeconfig-vrunner-{run}"));
    let runner = client(
        &service_account_kubeconfig(&admin, &env.kubeconfig, &namespace, "ctem-validation", &rules, &path).await,
    )
    .await;
    let runner_agents: Api<SecurityAgent> = Api::namespaced(runner, &namespace);
    let as_runner = PatchParams::apply("secop-validation").force();

    // Forging the Ready condition is refused, naming the rule (the policy
    // takes effect within a few seconds of its creation).
    let forged = json!({
        "apiVersion": "security.example.io/v1alpha1", "kind": "SecurityAgent", "metadata": { "name": "poc" },
        "status": { "conditions": [{ "type": "Ready", "status": "False", "reason": "Forged", "message": "forged", "lastTransitionTime": "2026-12-02T10:00:00Z" }] },
    });
    wait_for("the policy refusing a forged condition", Duration::from_secs(30), || async {
        match runner_agents.patch_status("poc", &as_runner, &Patch::Apply(&forged)).await {
            Err(kube::Error::Api(e)) if e.message.contains("may change status.validation only") => Ok(true),
            Err(e) => Err(format!("{e}")),
            Ok(_) => {
                // Not yet enforced: put the operator's status back.
                agents
                    .patch_status(
                        "poc",
                        &PatchParams::apply("security-operator-status").force(),
                        &Patch::Apply(&operator_status),
                    )
                    .await
                    .unwrap();
                Ok(false)
            }
        }
    })
    .await;

    // Its own field is accepted, and the operator's fields stay.
    let result = json!({
        "apiVersion": "security.example.io/v1alpha1", "kind": "SecurityAgent", "metadata": { "name": "poc" },
        "status": { "validation": { "lastRun": "2026-12-02T10:05:00Z", "pod": "ctem-validation-1", "scenarios": [
            { "name": "validate-shell", "result": "Passed", "detectedBy": ["falco"], "missing": [] },
        ] } },
    });
    runner_agents.patch_status("poc", &as_runner, &Patch::Apply(&result)).await.unwrap();
    let agent = agents.get("poc").await.unwrap();
    let status = agent.status.unwrap();
    assert_eq!(status.validation.unwrap().scenarios[0].result, secop_api::ScenarioOutcome::Passed);
    assert_eq!(condition_of(&status.conditions, "Ready"), Some("True"));

    delete_admission_policy(&admin, &name).await;
}

/// What a SecurityAgent owns is exempt from the posture audits (its sensors
/// are privileged by design), and owner references are metadata anyone who
/// may write an object can set. The chart's ValidatingAdmissionPolicy
/// (templates/agent-ownership-policy.yaml, rendered by helm as for the e2e
/// operator's release, honouring this test's namespace) lets only the
/// operator give an object such an owner, on the real API server: a tenant
/// who may write Deployments cannot make their agent the owner of one,
/// neither at creation nor later, nor remove the reference, nor change the
/// spec of what the agent owns (a container added to the sensors'
/// DaemonSet, a Role's rules) or of a pod a controller runs, while the
/// operator's own writes (started once the policy is in force), an
/// admin's and labels pass. The policy covers every namespaced kind the posture engine
/// keeps (as the API server's discovery names them).
#[tokio::test(flavor = "multi_thread")]
async fn only_the_operator_may_make_an_agent_the_owner_of_a_workload() {
    let Some(env) = env() else { return };
    let helm = std::env::var_os("SECOP_HELM").map(PathBuf::from).expect("SECOP_HELM (cargo xtask test builds helm)");
    let _serial = SERIAL.lock().await;
    let admin = client(&env.kubeconfig).await;
    install_crd(&admin).await;
    let run = std::process::id();
    let namespace = format!("e2e-ownership-{run}");
    create_namespace(&admin, &namespace).await;

    // The chart's policy for the release whose ServiceAccount the e2e
    // operator runs as (the e2e release itself is installed without it:
    // honouring every namespace, it would refuse the real-node test's
    // operator), under a name of this test's own.
    let template = Command::new(&helm)
        .args(["template", &env.operator_namespace])
        .arg(repo("deploy/helm/security-operator"))
        .args(["--namespace", &env.operator_namespace, "--kube-version", "v1.34.4"])
        .args(["--show-only", "templates/agent-ownership-policy.yaml"])
        .args(["--set-json", &format!(r#"policy.agentNamespaces=["{namespace}"]"#)])
        .output()
        .unwrap();
    assert!(template.status.success(), "helm template: {}", String::from_utf8_lossy(&template.stderr));
    let name = format!("e2e-agent-ownership-{run}");
    let (policy, binding) = apply_admission_policy(&admin, &String::from_utf8_lossy(&template.stdout), &name).await;
    let rules = policy["spec"]["matchConstraints"]["resourceRules"].as_array().unwrap();
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!([env.operator_namespace, namespace]),
        "only where agents are honoured"
    );

    // Every namespaced kind the posture engine keeps is matched.
    let discovery = kube::Discovery::new(admin.clone()).run().await.unwrap();
    for kind in secop_posture::model::Kind::ALL {
        let (resource, caps) = discovery
            .groups()
            .flat_map(|g| g.recommended_resources())
            .find(|(r, _)| {
                r.kind == kind.name() && ["", "apps", "batch", "rbac.authorization.k8s.io"].contains(&r.group.as_str())
            })
            .unwrap_or_else(|| panic!("{} in the API server's discovery", kind.name()));
        if caps.scope != kube::discovery::Scope::Namespaced {
            continue;
        }
        let matched = rules.iter().any(|rule| {
            let has = |field: &str, value: &str| rule[field].as_array().unwrap().iter().any(|v| v == value);
            has("apiGroups", &resource.group)
                && has("resources", &resource.plural)
                && has("operations", "CREATE")
                && has("operations", "UPDATE")
        });
        assert!(matched, "the policy does not match {}.{} ({})", resource.plural, resource.group, kind.name());
    }

    // The agent; its operator starts once the policy is in force, so that
    // its writes are known to pass it.
    apply_agent(&admin, &namespace, &json!({
        "apiVersion": "security.example.io/v1alpha1", "kind": "SecurityAgent",
        "metadata": { "name": "poc", "namespace": namespace },
        "spec": { "features": [{ "name": "falco" }], "override": { "nodeAgent": { "nodeSelector": { "type": "kwok" } } } },
    }))
    .await;
    let agent = agent_status(&admin, &namespace, "poc").await.unwrap();
    let owner = json!([{
        "apiVersion": "security.example.io/v1alpha1", "kind": "SecurityAgent", "name": "poc",
        "uid": agent.metadata.uid.clone().unwrap(), "controller": true,
    }]);

    // A tenant who may write workloads and Roles (and read agents) in the
    // namespace.
    let tenant_rules = json!([
        { "apiGroups": ["security.example.io"], "resources": ["securityagents"], "verbs": ["get", "list"] },
        { "apiGroups": ["apps"], "resources": ["deployments", "daemonsets"], "verbs": ["get", "list", "create", "update", "patch"] },
        { "apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"] },
        { "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["get", "patch"] },
        { "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"] },
    ]);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kubeconfig-ownership-{run}"));
    let tenant =
        client(&namespace_kubeconfig(&admin, &env.kubeconfig, &namespace, "team", &tenant_rules, &path).await).await;
    let tenant_deployments: Api<Deployment> = Api::namespaced(tenant.clone(), &namespace);
    let admin_deployments: Api<Deployment> = Api::namespaced(admin.clone(), &namespace);
    let deployment = |name: &str, owners: Option<&Value>| {
        let mut object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": name },
            "spec": { "replicas": 0, "selector": { "matchLabels": { "app": name } }, "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "miner", "image": "busybox", "securityContext": { "privileged": true } }] },
            } },
        });
        if let Some(owners) = owners {
            object["metadata"]["ownerReferences"] = owners.clone();
        }
        serde_json::from_value::<Deployment>(object).unwrap()
    };
    let refusal = "only the security operator may name a SecurityAgent as the owner of Deployment";

    // Created with the agent as its owner: refused (the policy takes effect
    // within seconds of its creation; an earlier success is undone).
    wait_for("the policy refusing a tenant's owned Deployment", Duration::from_secs(30), || async {
        match tenant_deployments.create(&PostParams::default(), &deployment("hidden", Some(&owner))).await {
            Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains(refusal) => Ok(true),
            Err(e) => Err(format!("{e}")),
            Ok(_) => {
                admin_deployments.delete("hidden", &DeleteParams::default()).await.unwrap();
                Ok(false)
            }
        }
    })
    .await;
    let mut operator = Operator::start(&env, &namespace);
    wait_ready(&admin, &namespace, "poc", Duration::from_secs(120)).await;
    let objects = live_objects(&admin, &namespace, &agent_status(&admin, &namespace, "poc").await.unwrap()).await;
    for kind in ["ServiceAccount", "DaemonSet"] {
        assert!(objects.iter().any(|(k, _)| k == kind), "the operator applied its {kind}: {objects:?}");
    }

    // Created plainly, then given the owner: refused too.
    tenant_deployments.create(&PostParams::default(), &deployment("plain", None)).await.unwrap();
    let claim = json!({ "metadata": { "ownerReferences": owner } });
    let refused = tenant_deployments.patch("plain", &PatchParams::default(), &Patch::Merge(&claim)).await;
    assert_forbidden(&refused, refusal);

    // What the operator owns keeps its spec: a container added to the
    // sensors' DaemonSet (exempt from the audits) is refused; a label is not.
    let refused_change =
        |kind: &str, name: &str| format!("a SecurityAgent owns {kind} {name}: only the security operator");
    let tenant_daemonsets: Api<DaemonSet> = Api::namespaced(tenant.clone(), &namespace);
    let falco = tenant_daemonsets.get("falco").await.unwrap();
    let mut containers = serde_json::to_value(&falco.spec.unwrap().template.spec.unwrap().containers).unwrap();
    containers
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "miner", "image": "busybox", "securityContext": { "privileged": true } }));
    let add_container = json!({ "spec": { "template": { "spec": { "containers": containers } } } });
    let refused = tenant_daemonsets.patch("falco", &PatchParams::default(), &Patch::Merge(&add_container)).await;
    assert_forbidden(&refused, &refused_change("DaemonSet", "falco"));
    let relabel = json!({ "metadata": { "labels": { "team": "a" } } });
    tenant_daemonsets.patch("falco", &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();

    // A Role an agent owns keeps its rules (the tenant holds the added one,
    // so RBAC's own escalation check lets it through to the policy).
    let admin_roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), &namespace);
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": { "name": "by-admin", "ownerReferences": owner },
        "rules": [{ "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"] }],
    });
    admin_roles.create(&PostParams::default(), &serde_json::from_value(role).unwrap()).await.unwrap();
    let widen = json!({ "rules": [{ "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"] }] });
    let refused = Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(tenant.clone(), &namespace)
        .patch("by-admin", &PatchParams::default(), &Patch::Merge(&widen))
        .await;
    assert_forbidden(&refused, &refused_change("Role", "by-admin"));

    // An admin may give the owner; the tenant may then relabel the object
    // but neither change its spec nor remove the reference; once an admin
    // has removed it, the spec is the tenant's again.
    admin_deployments.create(&PostParams::default(), &deployment("by-admin", Some(&owner))).await.unwrap();
    tenant_deployments.patch("by-admin", &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    // The scale subresource is not the spec's owner's business.
    let no_replicas = json!({ "spec": { "replicas": 0 } });
    tenant_deployments.patch_scale("by-admin", &PatchParams::default(), &Patch::Merge(&no_replicas)).await.unwrap();
    let slower = json!({ "spec": { "minReadySeconds": 5 } });
    let refused = tenant_deployments.patch("by-admin", &PatchParams::default(), &Patch::Merge(&slower)).await;
    assert_forbidden(&refused, &refused_change("Deployment", "by-admin"));
    let release = json!({ "metadata": { "ownerReferences": null } });
    let refused = tenant_deployments.patch("by-admin", &PatchParams::default(), &Patch::Merge(&release)).await;
    let removal = "only the security operator may remove the SecurityAgent owner reference of Deployment by-admin";
    assert_forbidden(&refused, removal);
    let released = admin_deployments.patch("by-admin", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    assert!(released.metadata.owner_references.unwrap_or_default().is_empty());
    tenant_deployments.patch("by-admin", &PatchParams::default(), &Patch::Merge(&slower)).await.unwrap();

    // A pod run by a controller is audited through its template: its own
    // spec is the controller's (here a ReplicaSet of the tenant's own
    // Deployment, on a kwok node).
    let one = json!({ "spec": { "replicas": 1 } });
    tenant_deployments.patch("plain", &PatchParams::default(), &Patch::Merge(&one)).await.unwrap();
    let tenant_pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(tenant.clone(), &namespace);
    let started = Instant::now();
    let pod_name = loop {
        let pods = tenant_pods.list(&ListParams::default().labels("app=plain")).await.unwrap();
        if let Some(name) = pods.items.first().and_then(|p| p.metadata.name.clone()) {
            break name;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no pod of the plain Deployment within 60 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let swap_image =
        json!({ "spec": { "containers": [{ "name": "miner", "image": "evil.example.invalid/miner:1" }] } });
    let refused = tenant_pods.patch(&pod_name, &PatchParams::default(), &Patch::Strategic(&swap_image)).await;
    assert_forbidden(&refused, "is run by a controller and audited through its template");
    tenant_deployments.patch("plain", &PatchParams::default(), &Patch::Merge(&no_replicas)).await.unwrap();

    delete_admission_policy(&admin, &name).await;
    // The operator removes its finalizer.
    delete_agent(&admin, &namespace, "poc").await;
    operator.kill();
}

/// Apply a ValidatingAdmissionPolicy and its binding from `yaml` (as the
/// chart holds or renders them) under `name`, a test's own (the chart's
/// names belong to the real-node test's release); the (policy, binding) as
/// applied.
async fn apply_admission_policy(admin: &Client, yaml: &str, name: &str) -> (Value, Value) {
    use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
    use serde::Deserialize as _;
    let apply = PatchParams::apply("e2e").force();
    let (mut policy, mut binding) = (Value::Null, Value::Null);
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let mut object = Value::deserialize(document).unwrap();
        object["metadata"]["name"] = json!(name);
        match object["kind"].as_str().unwrap() {
            "ValidatingAdmissionPolicy" => {
                Api::<ValidatingAdmissionPolicy>::all(admin.clone())
                    .patch(name, &apply, &Patch::Apply(&object))
                    .await
                    .unwrap();
                policy = object;
            }
            "ValidatingAdmissionPolicyBinding" => {
                object["spec"]["policyName"] = json!(name);
                Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
                    .patch(name, &apply, &Patch::Apply(&object))
                    .await
                    .unwrap();
                binding = object;
            }
            other => panic!("unexpected {other} in the policy"),
        }
    }
    assert!(!policy.is_null() && !binding.is_null(), "a policy and its binding in:\n{yaml}");
    (policy, binding)
}

async fn delete_admission_policy(admin: &Client, name: &str) {
    use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
    Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone()).delete(name, &DeleteParams::default()).await.unwrap();
    Api::<ValidatingAdmissionPolicy>::all(admin.clone()).delete(name, &DeleteParams::default()).await.unwrap();
}

/// The API server refused the request (403) with `text` in its message.
fn assert_forbidden<T: std::fmt::Debug>(result: &Result<T, kube::Error>, text: &str) {
    assert!(matches!(result, Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains(text)), "{result:?}");
}

fn condition_of<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str())
}

/// Issue 16's admission webhook through the real API server: the e2e
/// release's ValidatingWebhookConfiguration (failurePolicy Ignore, the
/// chart's default) calls the operator process, which issued its own
/// certificate into the chart's Secret and put its CA into the caBundle.
/// A tenant's `kubectl apply` of a wrong feature config is refused naming
/// the field; a good one passes with kubectl printing the feature's
/// warning; with the operator down the wrong one is admitted, and the
/// reconcile reports it once the operator is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_agent_is_refused_at_apply_by_the_operators_webhook() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let Some(env) = env() else { return };
    let webhook_addr = std::env::var("SECOP_E2E_WEBHOOK_ADDR").expect("SECOP_E2E_WEBHOOK_ADDR");
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    let ns = &format!("e2e-webhook-{}", std::process::id());
    let tenant = tenant_kubeconfig(
        &client,
        &env.kubeconfig,
        ns,
        "agent-author",
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("webhook-tenant.kubeconfig"),
    )
    .await;
    let release = env.operator_namespace.clone();
    let host = webhook_addr.split(':').next().unwrap().to_string();
    let webhook_args = [
        format!("--webhook-addr={webhook_addr}"),
        format!("--webhook-host={host}"),
        format!("--webhook-config={release}"),
        format!("--webhook-secret={release}-webhook-tls"),
        // The operator's own namespace (POD_NAMESPACE in the chart): where its Secret is.
        format!("--lease-namespace={release}"),
        format!("--identity=webhook-{}", std::process::id()),
    ];
    let args: Vec<&str> = webhook_args.iter().map(String::as_str).collect();
    let mut operator = Operator::start_with(&env, ns, &args);

    let agent = |falco_config: Value| {
        json!({
            "apiVersion": "security.example.io/v1alpha1",
            "kind": "SecurityAgent",
            "metadata": { "name": "grid", "namespace": ns },
            "spec": { "features": [ { "name": "falco", "config": falco_config } ] },
        })
    };
    let wrong = agent(json!({ "driver": "kmod" }));

    // The certificate is issued and trusted without a manual step: the
    // chart's configuration gets the operator's CA.
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    wait_for("the operator to put its CA into the webhook's caBundle", Duration::from_secs(60), || async {
        let config = configs.get(&release).await.map_err(|e| e.to_string())?;
        Ok(config.webhooks.unwrap_or_default().iter().all(|w| w.client_config.ca_bundle.is_some()))
    })
    .await;
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &release)
        .get(&format!("{release}-webhook-tls"))
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));

    // 1. Refused, naming the field, by the feature's own configure.
    let refusal = kubectl_apply_until_refused(&client, &kubectl(), &tenant, &wrong, Duration::from_secs(60)).await;
    assert!(refusal.contains("admission webhook"), "{refusal}");
    assert!(refusal.contains("spec.features[falco].config.driver: "), "{refusal}");
    assert!(
        agent_status(&client, ns, "grid").await.is_err(),
        "a refused agent is not stored, so nothing is reconciled"
    );

    // 2. A good one passes; the feature's warning (an unknown field) is
    //    printed by kubectl.
    let (applied, output) =
        kubectl_apply(&kubectl(), &tenant, &agent(json!({ "driver": "modern_ebpf", "jsonOutptu": true })));
    assert!(applied, "{output}");
    assert!(output.contains("Warning: spec.features[falco].config.jsonOutptu: unknown field"), "{output}");
    wait_ready(&client, ns, "grid", Duration::from_secs(120)).await;

    // 3. The operator down, failurePolicy Ignore: the same wrong config is
    //    admitted; the operator back, the status names the field.
    operator.kill();
    let (applied, output) = kubectl_apply(&kubectl(), &tenant, &wrong);
    assert!(applied, "with failurePolicy Ignore and no operator, apply succeeds: {output}");
    let _operator = Operator::start_with(&env, ns, &[]);
    let (status, message) = wait_reason(&client, ns, "grid", "FalcoReady", "InvalidConfig").await;
    assert_eq!(status, "False");
    assert!(message.contains("config.driver"), "{message}");
    delete_agent(&client, ns, "grid").await;
}

/// `secop diff` as the operator's identity would apply: exit status,
/// stdout (the diffs) and stderr (the summary).
fn secop_diff(env: &Env, agent: &Value) -> (Option<i32>, String, String) {
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("diff-agent-{}.yaml", std::process::id()));
    std::fs::write(&file, serde_yaml::to_string(agent).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_secop"))
        .args(["diff", "-f"])
        .arg(&file)
        .env("KUBECONFIG", &env.operator_kubeconfig)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The lines a unified diff adds or removes (not its file headers).
fn changed_lines(diff: &str) -> Vec<&str> {
    diff.lines()
        .filter(|l| (l.starts_with('-') || l.starts_with('+')) && !l.starts_with("---") && !l.starts_with("+++"))
        .collect()
}

/// Issue 16's `secop diff` against the real API server: nothing to do
/// right after a reconcile (exit 0, no output); an override change is
/// exactly the changed field (exit 1); a disabled feature is its objects
/// pruned; a file that is not an agent is an error (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secop_diff_shows_what_an_apply_would_change() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let client = client(&env.kubeconfig).await;
    install_crd(&client).await;
    let ns = &format!("e2e-diff-{}", std::process::id());
    create_namespace(&client, ns).await;
    let _operator = Operator::start(&env, ns);
    let agent = json!({
        "apiVersion": "security.example.io/v1alpha1",
        "kind": "SecurityAgent",
        "metadata": { "name": "grid", "namespace": ns },
        "spec": {
            "features": [ { "name": "falco" }, { "name": "osquery" } ],
            "override": { "falco": { "resources": { "limits": { "memory": "1Gi" } } } },
        },
    });
    apply_agent(&client, ns, &agent).await;
    wait_ready(&client, ns, "grid", Duration::from_secs(120)).await;

    let (code, out, err) = secop_diff(&env, &agent);
    assert_eq!(code, Some(0), "no change right after the reconcile: {out}{err}");
    assert!(out.is_empty(), "{out}");

    let mut bigger = agent.clone();
    bigger["spec"]["override"]["falco"]["resources"]["limits"]["memory"] = json!("1536Mi");
    let (code, out, err) = secop_diff(&env, &bigger);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out.matches("diff -u -N ").count(), 1, "one object changes: {out}");
    assert!(out.starts_with(&format!("diff -u -N live/apps.v1.DaemonSet.{ns}.falco merged/")), "{out}");
    let lines: Vec<String> =
        changed_lines(&out).iter().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(lines, ["- memory: 1Gi", "+ memory: 1536Mi"], "exactly the changed field: {out}");
    assert!(err.contains("0 to create, 1 to change, 0 to prune"), "{err}");

    let mut without_osquery = agent.clone();
    without_osquery["spec"]["features"][1]["enabled"] = json!(false);
    let (code, out, err) = secop_diff(&env, &without_osquery);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(changed_lines(&out).iter().all(|l| l.starts_with('-')), "pruned objects only lose lines: {out}");
    let pruned: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("diff -u -N live/"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = rendered_objects(&agent, &["--feature", "osquery"])
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .map(|o| {
            let group_version = o["apiVersion"].as_str().unwrap().replace('/', ".");
            match o["metadata"]["namespace"].as_str() {
                Some(namespace) => format!(
                    "{group_version}.{}.{namespace}.{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                ),
                None => format!(
                    "{group_version}.{}.{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                ),
            }
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(pruned, expected, "every object of the disabled feature, and nothing else: {out}");
    assert!(err.contains(&format!("0 to create, 0 to change, {} to prune", expected.len())), "{err}");

    let (code, _, err) = secop_diff(&env, &json!({ "kind": "ConfigMap" }));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.starts_with("error: "), "{err}");

    // Nothing was written by the dry runs.
    let (code, out, _) = secop_diff(&env, &agent);
    assert_eq!(code, Some(0), "{out}");
    delete_agent(&client, ns, "grid").await;
}
