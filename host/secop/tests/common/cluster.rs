//! Talking to the test cluster, shared by the e2e tests on kwok nodes and
//! the real-node test: clients, waiting, CRD and namespace set-up, agents
//! and their conditions.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Config};
use secop_api::SecurityAgent;
use serde_json::{Value, json};

pub async fn client(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("client config");
    Client::try_from(config).expect("client")
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match check().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what} {last}");
}

pub async fn install_crd(client: &Client) {
    let crd: CustomResourceDefinition = serde_yaml::from_str(
        &std::fs::read_to_string(repo("deploy/crds/security.example.io_securityagents.yaml")).unwrap(),
    )
    .unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch("securityagents.security.example.io", &PatchParams::apply("e2e").force(), &Patch::Apply(&crd))
        .await
        .unwrap();
    wait_for("the SecurityAgent CRD", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let crd = api.get("securityagents.security.example.io").await.map_err(|e| e.to_string())?;
            Ok(crd
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True")))
        }
    })
    .await;
}

pub async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

pub async fn apply_agent(client: &Client, namespace: &str, agent: &Value) {
    let api: Api<SecurityAgent> = Api::namespaced(client.clone(), namespace);
    let name = agent["metadata"]["name"].as_str().unwrap();
    api.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(agent)).await.unwrap();
}

pub async fn agent_status(client: &Client, namespace: &str, name: &str) -> Result<SecurityAgent, String> {
    Api::<SecurityAgent>::namespaced(client.clone(), namespace).get(name).await.map_err(|e| e.to_string())
}

pub fn condition(agent: &SecurityAgent, type_: &str) -> Option<(String, String)> {
    agent.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.message.clone()))
}

/// Ready=True for the current generation.
pub async fn wait_ready(client: &Client, namespace: &str, name: &str, timeout: Duration) {
    wait_for(&format!("{namespace}/{name} Ready"), timeout, || async {
        let agent = agent_status(client, namespace, name).await?;
        let observed = agent.status.as_ref().and_then(|s| s.observed_generation);
        let ready = condition(&agent, "Ready");
        if observed == agent.metadata.generation && ready.as_ref().is_some_and(|(s, _)| s == "True") {
            Ok(true)
        } else {
            Err(format!("(observed {observed:?} of {:?}, Ready {ready:?})", agent.metadata.generation))
        }
    })
    .await;
}

/// Delete the agent and wait until it is gone (its finalizer ran).
pub async fn delete_agent(client: &Client, namespace: &str, name: &str) {
    let api: Api<SecurityAgent> = Api::namespaced(client.clone(), namespace);
    api.delete(name, &kube::api::DeleteParams::default()).await.unwrap();
    wait_for("the agent to be gone", Duration::from_secs(60), || async {
        Ok(api.get_opt(name).await.map_err(|e| e.to_string())?.is_none())
    })
    .await;
}

/// (kind, name) of every live object labelled as this agent's, across the
/// kinds of `inventory` (its status inventory); a kind whose CRD is gone
/// has no objects.
pub async fn live_objects(
    client: &Client,
    namespace: &str,
    agent: &SecurityAgent,
) -> std::collections::BTreeSet<(String, String)> {
    live_objects_of(client, namespace, agent.metadata.name.as_ref().unwrap(), &agent.status.as_ref().unwrap().inventory)
        .await
}

pub async fn live_objects_of(
    client: &Client,
    namespace: &str,
    name: &str,
    inventory: &[String],
) -> std::collections::BTreeSet<(String, String)> {
    let selector = format!("security.example.io/owner={name},security.example.io/owner-namespace={namespace}");
    let mut found = std::collections::BTreeSet::new();
    for id in inventory {
        let (api_version, kind) = id.rsplit_once('/').unwrap();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let Ok((resource, caps)) =
            kube::discovery::pinned_kind(client, &GroupVersionKind::gvk(group, version, kind)).await
        else {
            continue;
        };
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let items = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(items) => items,
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => panic!("listing {kind}: {e}"),
        };
        for item in items {
            found.insert((kind.to_string(), item.metadata.name.unwrap()));
        }
    }
    found
}

/// Where a test identity's rules hold.
enum Grant {
    /// A ClusterRole and ClusterRoleBinding named `<namespace>-<name>`.
    Cluster,
    /// A Role and RoleBinding named `<name>` in the ServiceAccount's namespace.
    Namespace,
}

/// A ServiceAccount `name` in `namespace` (created if missing) holding
/// exactly `rules` where `grant` says, and a kubeconfig at `path` with a
/// token of it from the TokenRequest API.
async fn identity(
    client: &Client,
    admin_kubeconfig: &Path,
    namespace: &str,
    name: &str,
    grant: Grant,
    rules: &Value,
    path: &Path,
) -> PathBuf {
    use k8s_openapi::api::core::v1::ServiceAccount;
    create_namespace(client, namespace).await;
    let apply = PatchParams::apply("e2e").force();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    accounts
        .patch(
            name,
            &apply,
            &Patch::Apply(json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": name } })),
        )
        .await
        .unwrap();
    let (role_kind, binding_kind, role_name, role_namespace) = match grant {
        Grant::Cluster => ("ClusterRole", "ClusterRoleBinding", format!("{namespace}-{name}"), None),
        Grant::Namespace => ("Role", "RoleBinding", name.to_string(), Some(namespace)),
    };
    let rbac = |kind: &str| {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind));
        match role_namespace {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
            None => Api::<DynamicObject>::all_with(client.clone(), &resource),
        }
    };
    rbac(role_kind)
        .patch(
            &role_name,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": role_kind, "metadata": { "name": role_name },
                "rules": rules,
            })),
        )
        .await
        .unwrap();
    rbac(binding_kind)
        .patch(
            &role_name,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": binding_kind, "metadata": { "name": role_name },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name },
                "subjects": [ { "kind": "ServiceAccount", "name": name, "namespace": namespace } ],
            })),
        )
        .await
        .unwrap();
    use k8s_openapi::api::authentication::v1::TokenRequest;
    let request: TokenRequest = serde_json::from_value(json!({ "spec": { "expirationSeconds": 3600 } })).unwrap();
    let token =
        accounts.create_token_request(name, &PostParams::default(), &request).await.unwrap().status.unwrap().token;
    let mut kubeconfig: Value = serde_yaml::from_str(&std::fs::read_to_string(admin_kubeconfig).unwrap()).unwrap();
    kubeconfig["users"] = json!([ { "name": "user", "user": { "token": token } } ]);
    std::fs::write(path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    path.to_path_buf()
}

/// A kubeconfig for a ServiceAccount `name` in `namespace` bound to a
/// ClusterRole with exactly `rules`: how a test runs a component under its
/// own least privilege.
pub async fn service_account_kubeconfig(
    client: &Client,
    admin_kubeconfig: &Path,
    namespace: &str,
    name: &str,
    rules: &Value,
    path: &Path,
) -> PathBuf {
    identity(client, admin_kubeconfig, namespace, name, Grant::Cluster, rules, path).await
}

/// A ServiceAccount `name` in `namespace` holding exactly `rules` there (a
/// Role, no cluster-wide binding).
pub async fn namespace_kubeconfig(
    client: &Client,
    admin_kubeconfig: &Path,
    namespace: &str,
    name: &str,
    rules: &Value,
    path: &Path,
) -> PathBuf {
    identity(client, admin_kubeconfig, namespace, name, Grant::Namespace, rules, path).await
}

/// The identity of a tenant: a ServiceAccount `name` in `namespace` that
/// may manage SecurityAgents there and nothing else (a Role, no
/// cluster-wide binding).
pub async fn tenant_kubeconfig(
    client: &Client,
    admin_kubeconfig: &Path,
    namespace: &str,
    name: &str,
    path: &Path,
) -> PathBuf {
    let rules = json!([{ "apiGroups": ["security.example.io"], "resources": ["securityagents"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"] }]);
    namespace_kubeconfig(client, admin_kubeconfig, namespace, name, &rules, path).await
}

/// `kubectl apply -f` of `object` as the user of `kubeconfig`, the way a
/// user applies an agent: whether it succeeded, and what kubectl printed
/// (warnings and errors go to stderr).
pub fn kubectl_apply(kubectl: &Path, kubeconfig: &Path, object: &Value) -> (bool, String) {
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "kubectl-apply-{}-{}.yaml",
        std::process::id(),
        object["metadata"]["name"].as_str().unwrap_or("object")
    ));
    std::fs::write(&file, serde_yaml::to_string(object).unwrap()).unwrap();
    let out = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `kubectl apply` of an agent the admission webhook must refuse, until it
/// is refused: what kubectl printed. An apply admitted meanwhile (the
/// webhook not serving yet, failurePolicy Ignore) is deleted and tried
/// again; still admitted after `timeout` fails the test.
pub async fn kubectl_apply_until_refused(
    client: &Client,
    kubectl: &Path,
    kubeconfig: &Path,
    agent: &Value,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    let (namespace, name) =
        (agent["metadata"]["namespace"].as_str().unwrap(), agent["metadata"]["name"].as_str().unwrap());
    loop {
        let (applied, output) = kubectl_apply(kubectl, kubeconfig, agent);
        if !applied {
            return output;
        }
        assert!(Instant::now() < deadline, "{namespace}/{name} is still admitted after {timeout:?}: {output}");
        delete_agent(client, namespace, name).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
