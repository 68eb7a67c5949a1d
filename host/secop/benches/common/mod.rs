//! What the benchmarks on the test control plane share: the admin client,
//! the CRD, a namespace of their own, the sample agent, the operator.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// The admin client of `kubeconfig`, with the SecurityAgent CRD installed
/// from deploy/crds and a fresh namespace `name`.
pub async fn cluster_with_namespace(kubeconfig: &std::ffi::OsStr, name: &str) -> Client {
    let config =
        Config::from_custom_kubeconfig(Kubeconfig::read_from(kubeconfig).unwrap(), &KubeConfigOptions::default())
            .await
            .unwrap();
    let client = Client::try_from(config).unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(
        &std::fs::read_to_string(repo("deploy/crds/security.example.io_securityagents.yaml")).unwrap(),
    )
    .unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch("securityagents.security.example.io", &PatchParams::apply("bench").force(), &Patch::Apply(&crd))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let namespace: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    client
}

/// The full sample (deploy/samples/securityagent_full.yaml), in `namespace`.
pub fn sample_agent(namespace: &str) -> Value {
    let mut agent: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("deploy/samples/securityagent_full.yaml")).unwrap())
            .unwrap();
    agent["metadata"]["namespace"] = json!(namespace);
    agent
}

/// `secop run` watching `namespace` as the user of `kubeconfig`, quiet,
/// with `extra` arguments and a precompiled-module cache of its own.
pub fn start_operator(kubeconfig: &std::ffi::OsStr, namespace: &str, extra: &[String], cache: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_secop"))
        .args(["run", "--namespace", namespace, "--metrics-addr", "127.0.0.1:0", "--log-format", "text"])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env("SECOP_CACHE_DIR", std::env::temp_dir().join(cache))
        .env("SECOP_CACHE_KEY", "bench-cache-key")
        .env("SECOP_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start secop run")
}
