//! The security operator's controller: everything that needs a cluster.
//!
//! `controller` reconciles SecurityAgents; `resources` applies and prunes;
//! `status` writes conditions; `leader` elects one active replica;
//! `server` exposes metrics and health; `metrics` defines them;
//! `webhook` serves the admission review of `admission`.

mod admission;
mod cache;
mod controller;
mod error;
mod leader;
mod metrics;
mod modules;
mod pki;
mod resources;
mod server;
mod status;
mod telemetry;
mod watches;
mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;
use secop_engine::Registry;
use secop_runtime::Runtime;

pub use error::RunError;
pub use resources::{APPLIED_HASH_ANNOTATION, Plan};
pub use telemetry::issue_telemetry_files;
pub use webhook::{REVIEW_PATH, TlsSource, WebhookError, WebhookOptions};

/// How `secop run` was started.
pub struct Options {
    pub operator_image: String,
    /// Watch one namespace; None = all.
    pub namespace: Option<String>,
    pub metrics_addr: SocketAddr,
    pub cache_dir: Option<PathBuf>,
    /// Registries (`host:port`) reached over plain HTTP (loopback tests).
    pub plain_http_registries: Vec<String>,
    /// Re-resolve agents that pull `Always` (or are degraded) this often.
    pub module_poll: Duration,
    /// Leader election: (lease namespace, identity); None = run at once.
    pub leader_election: Option<(String, String)>,
    pub identity: String,
    /// Size and time bounds of every module fetch.
    pub fetch_limits: secop_oci::FetchLimits,
    /// Bytes all feature instances may hold together.
    pub memory_budget: usize,
    /// Bytes the on-disk module cache may hold (oldest files go first).
    pub cache_max_bytes: u64,
    /// Key of the precompiled-module cache's tags; None: a random key per
    /// process (earlier precompiled modules are then recompiled).
    pub cache_key: Option<Vec<u8>>,
    /// The cluster admin's policy, with the operator's own and watched
    /// namespaces already honoured ([`secop_policy::ClusterPolicy::for_operator`]).
    pub policy: secop_policy::ClusterPolicy,
    /// Serve the validating admission webhook (every replica, leader or
    /// not); None: no webhook.
    pub webhook: Option<WebhookOptions>,
}

/// Start everything and run until shutdown or loss of leadership.
pub async fn run(options: Options) -> std::result::Result<(), RunError> {
    let metrics = metrics::Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(server::serve(options.metrics_addr, metrics.clone(), ready.clone()));

    let runtime = Arc::new(
        Runtime::new(options.cache_dir.clone())?
            .with_memory_budget(options.memory_budget)
            .with_cache_key(options.cache_key.as_deref())?,
    );
    if options.cache_key.is_none() && options.cache_dir.is_some() {
        tracing::warn!(
            "no cache key (SECOP_CACHE_KEY): precompiled modules of earlier runs are recompiled, not trusted"
        );
    }
    // Fetched components live beside the precompiled ones (both by
    // digest); without a cache directory, in a directory of this process.
    let module_cache = options
        .cache_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("secop-modules-{}", std::process::id())))
        .join("oci");
    let cache_root = options.cache_dir.clone().unwrap_or_else(|| module_cache.clone());
    cache::trim(&cache_root, options.cache_max_bytes);
    let modules = modules::Modules::new(
        runtime.clone(),
        module_cache,
        options.plain_http_registries.clone(),
        options.fetch_limits,
    )
    .with_cache_bound(cache_root, options.cache_max_bytes)
    .with_signers(&options.policy)?;
    let registry = Arc::new(Registry::with_builtins(runtime)?);
    let client = Client::try_default().await.map_err(RunError::Connect)?;
    client.apiserver_version().await.map_err(RunError::Reach)?;
    let policy = Arc::new(options.policy);
    // Every replica reviews, leader or not: the Service spreads the API
    // server's calls over them.
    let webhook = match options.webhook {
        Some(webhook) => {
            let reviewer = Arc::new(admission::Reviewer {
                registry: registry.clone(),
                policy: policy.clone(),
                operator_image: options.operator_image.clone(),
                budget: webhook.budget,
            });
            tokio::spawn(webhook::serve(webhook, client.clone(), reviewer))
        }
        None => tokio::spawn(std::future::pending::<Result<(), webhook::WebhookError>>()),
    };
    ready.store(true, Ordering::Relaxed);

    let lost = match &options.leader_election {
        Some((lease_namespace, identity)) => Some(
            leader::acquire(
                client.clone(),
                leader::LeaseConfig {
                    namespace: lease_namespace.clone(),
                    name: "security-operator".into(),
                    identity: identity.clone(),
                    duration: Duration::from_secs(15),
                },
            )
            .await,
        ),
        None => None,
    };

    let (watches, applied_kinds) = watches::KindWatches::new(client.clone(), options.namespace.clone());
    let ctx = Arc::new(controller::Context {
        recorder: Recorder::new(client.clone(), controller::reporter(&options.identity)),
        client,
        registry,
        modules,
        module_poll: options.module_poll,
        kinds: resources::Kinds::default(),
        metrics,
        operator_image: options.operator_image,
        policy,
        retries: controller::Retries::default(),
        watches,
    });
    tracing::info!(namespace = options.namespace.as_deref().unwrap_or("<all>"), "controller starting");
    let controller = controller::run(ctx, options.namespace, applied_kinds);
    tokio::select! {
        _ = controller => Ok(()),
        _ = async { match lost { Some(rx) => { let _ = rx.await; } None => std::future::pending().await } } => {
            Err(RunError::LostLeadership)
        }
        result = server => Err(RunError::MetricsServer(format!("{result:?}"))),
        result = webhook => Err(match result {
            Ok(Err(e)) => RunError::Webhook(e),
            Ok(Ok(())) => RunError::Webhook(webhook::WebhookError::Stopped("without an error".into())),
            Err(join) => RunError::Webhook(webhook::WebhookError::Stopped(join.to_string())),
        }),
    }
}

/// Why `secop diff` could not find out what would change.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PlanError(error::Error);

/// What a reconcile of `agent`, rendered into `desired`, would change on
/// the cluster of `client` (`secop diff`): server-side apply dry runs of
/// every object, and what would be pruned. Nothing is written.
pub async fn plan(
    client: &Client,
    agent: &secop_api::SecurityAgent,
    rendered: &secop_engine::Rendered,
) -> std::result::Result<Plan, PlanError> {
    use kube::ResourceExt as _;
    let namespace = agent.namespace().unwrap_or_else(|| "default".into());
    let name = agent.name_any();
    let agents: kube::Api<secop_api::SecurityAgent> = kube::Api::namespaced(client.clone(), &namespace);
    let live = agents.get_opt(&name).await.map_err(|e| PlanError(e.into()))?;
    // Objects of an agent not created yet carry no owner reference in the
    // dry run (there is no uid to refer to).
    let reference = live.as_ref().map_or(serde_json::Value::Null, resources::owner_reference);
    let previous_kinds = live.as_ref().map(status::inventory).unwrap_or_default();
    let owner = resources::Owner { agent: &name, namespace: &namespace, reference: &reference };
    // The collectors as the reconcile stamps them: with the CA they trust
    // (a credential not issued yet gets one at the apply).
    let mut desired = rendered.objects.clone();
    if let Some(tls) = &rendered.telemetry {
        let fingerprint = telemetry::existing_fingerprint(client, &namespace, tls).await.map_err(PlanError)?;
        telemetry::stamp(&mut desired, tls, fingerprint.as_deref().unwrap_or("(issued at apply)"));
    }
    resources::plan(client, &resources::Kinds::default(), &owner, &desired, &previous_kinds).await.map_err(PlanError)
}
