//! `secop`: the security operator's command line.

mod conformance;
mod console;
mod diff;
mod feature;
mod output;
mod posture;
mod scaffold;
mod validate;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;
use secop_api::SecurityAgent;
use secop_engine::{Registry, RenderOptions, Rendered};
use secop_runtime::Runtime;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "secop", version, about = "Kubernetes security operator with WebAssembly features")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Directory for precompiled modules (default: $SECOP_CACHE_DIR, else the user cache dir).
    #[arg(long, global = true, env = "SECOP_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile modules on every start instead of caching them.
    #[arg(long, global = true)]
    no_cache: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Print the desired state of a SecurityAgent, offline, from the built-in modules.
    Render {
        /// The SecurityAgent (YAML or JSON); `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Yaml)]
        output: Format,
        /// Only this feature's objects.
        #[arg(long)]
        feature: Option<String>,
        /// Use a component file for a feature instead of the built-in one (repeatable).
        #[arg(long = "module", value_name = "PATH")]
        modules: Vec<PathBuf>,
        /// Image of the operator (Jobs that run `secop` use it).
        #[arg(long, default_value = secop_engine::DEFAULT_OPERATOR_IMAGE)]
        operator_image: String,
        /// Print the objects of healthy features even when another feature fails.
        #[arg(long)]
        keep_going: bool,
        /// The cluster policy to apply (the chart's `policy` values as a
        /// file); default: the chart's default policy.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Print the SecurityAgent CustomResourceDefinition.
    Crd,
    /// Print the RBAC rules the built-in features grant their workloads, in
    /// ClusterRoles and in Roles (the operator must hold them all: the chart
    /// grants the first cluster-wide, the second per honoured namespace).
    #[command(hide = true)]
    FeatureRules {
        /// A Markdown table per feature and role instead (docs/rbac.md).
        #[arg(long)]
        markdown: bool,
    },
    /// Run the controller against the cluster of the current kubeconfig or
    /// in-cluster service account.
    Run {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_addr: std::net::SocketAddr,
        /// Take a Lease before reconciling, so several replicas are safe.
        #[arg(long)]
        leader_elect: bool,
        /// Namespace of the leader-election Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "security-operator")]
        lease_namespace: String,
        /// This replica's identity (the pod name).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Image of the operator itself (Jobs that run `secop` use it).
        #[arg(long, env = "OPERATOR_IMAGE", default_value = secop_engine::DEFAULT_OPERATOR_IMAGE)]
        operator_image: String,
        /// Log lines as JSON (default) or text.
        #[arg(long, value_enum, default_value_t = LogFormat::Json)]
        log_format: LogFormat,
        /// A module registry (`host:port`) reached over plain HTTP (repeatable; loopback registries only).
        #[arg(long = "plain-http", value_name = "HOST:PORT")]
        plain_http: Vec<String>,
        /// Seconds between re-resolving agents whose modules pull `Always` (moved tags) or are degraded.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        module_poll_seconds: u64,
        /// Largest feature module (wasm layer) fetched from a registry, in MiB.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
        module_max_mib: u64,
        /// Size bound of the on-disk module cache, in MiB (keep it below the
        /// cache volume's size; oldest files are evicted first).
        #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(16..))]
        module_cache_max_mib: u64,
        /// Memory all feature instances may hold together, in MiB (each is
        /// also held to its own `limits.memoryMib`).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..=16384))]
        module_memory_budget_mib: u64,
        /// Key that tags precompiled modules in the cache, so only entries this
        /// operator wrote are loaded (the chart keeps it in a Secret).
        #[arg(long, env = "SECOP_CACHE_KEY", hide_env_values = true)]
        cache_key: Option<String>,
        /// The cluster policy (the chart mounts its `policy` values here);
        /// default: only the operator's own and watched namespaces, the
        /// built-in images, built-in modules only.
        #[arg(long, env = "SECOP_POLICY", value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Serve the validating admission webhook on this address (the
        /// chart: 0.0.0.0:9443); SecurityAgents are reviewed at
        /// `secop_operator::REVIEW_PATH`.
        #[arg(long, value_name = "ADDR")]
        webhook_addr: Option<std::net::SocketAddr>,
        /// Secret in the operator's namespace where the operator keeps the
        /// webhook's CA and certificate (issued and renewed by itself).
        #[arg(long, default_value = "security-operator-webhook-tls")]
        webhook_secret: String,
        /// The ValidatingWebhookConfiguration whose caBundle the operator
        /// keeps matching that certificate.
        #[arg(long, default_value = "security-operator")]
        webhook_config: String,
        /// A name the webhook certificate is for: the webhook Service's DNS
        /// names, or an IP address (repeatable; required with
        /// --webhook-addr unless --webhook-tls-dir).
        #[arg(long = "webhook-host", value_name = "NAME")]
        webhook_hosts: Vec<String>,
        /// Serve tls.crt and tls.key from this directory instead (cert-manager's
        /// Secret, mounted; re-read when it changes).
        #[arg(long, value_name = "DIR")]
        webhook_tls_dir: Option<PathBuf>,
        /// Milliseconds a review's feature calls may take before it is
        /// answered unchecked (allowed with a warning).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=10000))]
        webhook_budget_millis: u64,
    },
    /// Show what applying a SecurityAgent would change on the cluster of
    /// the current kubeconfig (server-side apply dry run): a unified diff
    /// per object created, changed or pruned. Exit 0: no change, 1:
    /// changes, 2: error.
    Diff(diff::Diff),
    /// Install the index templates of the CTEM indices in Elasticsearch,
    /// idempotently (the gateway collector's init container runs this).
    EsSetup(output::EsSetup),
    /// Upsert Trivy Operator VulnerabilityReports into the vulnerabilities
    /// index and resolve findings that vanished; with --watch, keep doing so
    /// as reports change (the trivy feature's sync Deployment).
    TrivySync(output::TrivySync),
    /// Print the CTEM checklist (docs/seed-deviations.md, Elasticsearch §7.2) with pass/fail read from the
    /// indices; exits 1 when a check fails.
    CtemReport(output::CtemReport),
    /// Check that the detections of the scenarios a pod performed arrived
    /// (the `check` step of the spec.tests CronJob); writes the result to
    /// the events index and, with --agent, the agent's status.validation.
    Validate(validate::Validate),
    /// Feature modules in OCI registries: push, pull, inspect, test.
    #[command(subcommand)]
    Feature(feature::FeatureCommand),
    /// Serve the read-only web console: agents and their modules, events,
    /// posture inventory and alerts, the CTEM checklist and validation runs.
    Console(console::ConsoleArgs),
    /// The posture engine: inventory and security-context alerts (`scan` offline, `run` on a cluster).
    #[command(subcommand)]
    Posture(posture::PostureCommand),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (default_level, json) = match &cli.command {
        Command::Run { log_format, .. } => ("info", *log_format == LogFormat::Json),
        Command::Posture(posture::PostureCommand::Run(_)) | Command::Console(_) => ("info", false),
        _ => ("warn", false),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SECOP_LOG").unwrap_or_else(|_| default_level.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cache_dir(cli: &Cli) -> Option<PathBuf> {
    if cli.no_cache {
        return None;
    }
    cli.cache_dir.clone().or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|base| base.join("secop").join("modules"))
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Run {
            namespace,
            metrics_addr,
            leader_elect,
            lease_namespace,
            identity,
            operator_image,
            plain_http,
            module_poll_seconds,
            policy,
            module_max_mib,
            module_memory_budget_mib,
            module_cache_max_mib,
            cache_key,
            webhook_addr,
            webhook_secret,
            webhook_config,
            webhook_hosts,
            webhook_tls_dir,
            webhook_budget_millis,
            ..
        } => {
            let webhook = match (webhook_addr, webhook_tls_dir) {
                (None, _) => None,
                (Some(addr), Some(dir)) => Some(secop_operator::WebhookOptions {
                    addr: *addr,
                    tls: secop_operator::TlsSource::Files { dir: dir.clone() },
                    budget: std::time::Duration::from_millis(*webhook_budget_millis),
                }),
                (Some(_), None) if webhook_hosts.is_empty() => {
                    bail!("--webhook-addr: the webhook certificate needs --webhook-host (the Service's DNS names)")
                }
                (Some(addr), None) => Some(secop_operator::WebhookOptions {
                    addr: *addr,
                    tls: secop_operator::TlsSource::Managed {
                        namespace: lease_namespace.clone(),
                        secret: webhook_secret.clone(),
                        webhook_config: webhook_config.clone(),
                        hosts: webhook_hosts.clone(),
                    },
                    budget: std::time::Duration::from_millis(*webhook_budget_millis),
                }),
            };
            let identity = identity.clone().unwrap_or_else(|| {
                std::env::var("HOSTNAME").unwrap_or_else(|_| format!("secop-{}", std::process::id()))
            });
            let options = secop_operator::Options {
                operator_image: operator_image.clone(),
                namespace: namespace.clone(),
                metrics_addr: *metrics_addr,
                cache_dir: cache_dir(&cli),
                plain_http_registries: plain_http.clone(),
                module_poll: std::time::Duration::from_secs(*module_poll_seconds),
                leader_election: leader_elect.then(|| (lease_namespace.clone(), identity.clone())),
                identity,
                fetch_limits: secop_oci::FetchLimits { max_module_bytes: module_max_mib << 20, ..Default::default() },
                memory_budget: (*module_memory_budget_mib as usize) << 20,
                cache_key: cache_key.as_ref().map(|k| k.as_bytes().to_vec()),
                cache_max_bytes: module_cache_max_mib << 20,
                // The lease namespace is the operator's own (POD_NAMESPACE).
                policy: read_policy(policy.as_deref())?.for_operator(lease_namespace, namespace.as_deref()),
                webhook,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(secop_operator::run(options)).map_err(anyhow::Error::msg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::FeatureRules { markdown } => {
            let text = include_str!("../../../deploy/samples/securityagent_full.yaml");
            let agent = secop_api::parse(text).map_err(|e| anyhow::anyhow!("{e}"))?;
            let runtime = Arc::new(Runtime::new(cache_dir(&cli)).map_err(anyhow::Error::msg)?);
            let registry =
                Registry::with_builtins(runtime).map_err(|e| anyhow::anyhow!("{}: {}", e.feature, e.error))?;
            let rendered = secop_engine::render(&registry, &agent, &RenderOptions::default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            // ClusterRole rules must be held cluster-wide; Role rules only
            // in the namespaces whose agents are honoured (the chart grants
            // them per namespace).
            let rules_of = |kind: &str| {
                let mut rules: Vec<Value> = rendered
                    .objects
                    .iter()
                    .filter(|(k, _)| k.kind == kind)
                    .flat_map(|(_, v)| v["rules"].as_array().cloned().unwrap_or_default())
                    // A rule limited to the sample agent's name (ctem_validation's
                    // Role on its own agent) must hold for every agent's name.
                    .map(|mut rule| {
                        if let Some(rule) = rule.as_object_mut() {
                            rule.remove("resourceNames");
                        }
                        rule
                    })
                    .collect();
                rules.sort_by_key(|r| r.to_string());
                rules.dedup();
                rules
            };
            if *markdown {
                print!("{}", rbac_table(&rendered));
                return Ok(ExitCode::SUCCESS);
            }
            let rules = serde_json::json!({ "cluster": rules_of("ClusterRole"), "namespaced": rules_of("Role") });
            println!("{}", serde_json::to_string_pretty(&rules)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff(args) => Ok(diff::diff(args, cache_dir(&cli))),
        Command::EsSetup(args) => output::es_setup(args),
        Command::TrivySync(args) => output::trivy_sync(args),
        Command::Posture(command) => posture::run(command),
        Command::CtemReport(args) => output::ctem_report(args),
        Command::Validate(args) => validate::validate(args),
        Command::Console(args) => console::console(args),
        Command::Feature(command) => feature::run(command, cache_dir(&cli)),
        Command::Crd => {
            print!("{}", serde_yaml::to_string(&SecurityAgent::crd())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { file, output, feature, modules, operator_image, keep_going, policy } => {
            let agent = read_agent(file)?;
            let (registry, _) = registry_with(cache_dir(&cli), modules)?;
            if let Some(name) = feature
                && !agent.spec.features.iter().any(|f| &f.name == name)
            {
                bail!("--feature {name}: the SecurityAgent has no feature of that name");
            }
            let options = RenderOptions {
                operator_image: operator_image.clone(),
                policy: Arc::new(read_policy(policy.as_deref())?),
                ..Default::default()
            };
            let rendered = secop_engine::render(&registry, &agent, &options)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let failures: Vec<String> = rendered.failed().filter_map(|f| f.error_line()).collect();
            for warning in &rendered.warnings {
                eprintln!("warning: {warning}");
            }
            for line in &failures {
                eprintln!("error: {line}");
            }
            if failures.is_empty() || *keep_going {
                let mut out = std::io::stdout().lock();
                out.write_all(format_output(&rendered, *output, feature.as_deref())?.as_bytes())?;
            }
            Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// docs/rbac.md: every rule each built-in feature grants its workloads,
/// by role, as rendered for the full sample.
fn rbac_table(rendered: &Rendered) -> String {
    let list = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| if s.is_empty() { "\"\"".to_string() } else { format!("`{s}`") })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let mut out = String::from(
        "# RBAC the built-in features grant their workloads\n\n\
         Generated by `cargo xtask chart` from the full sample \
         (`secop feature-rules --markdown`); a test keeps it current. The operator \
         must hold each rule to create the role (the chart grants ClusterRole rules \
         cluster-wide and Role rules per honoured namespace; see \
         [security.md](security.md)).\n\n\
         | feature | role | scope | API groups | resources | verbs |\n|---|---|---|---|---|---|\n",
    );
    for (key, object) in rendered.objects.iter().filter(|(k, _)| k.kind == "ClusterRole" || k.kind == "Role") {
        let feature = rendered.owners.get(key).map(String::as_str).unwrap_or("?");
        let scope = if key.kind == "Role" { "agent namespace" } else { "cluster" };
        for rule in object["rules"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "| {feature} | {} {} | {scope} | {} | {} | {} |\n",
                key.kind,
                key.name,
                list(&rule["apiGroups"]),
                list(&rule["resources"]),
                list(&rule["verbs"])
            ));
        }
    }
    out
}

/// The SecurityAgent in `file` (`-`: stdin), as `render` and `diff` read it.
fn read_agent(file: &std::path::Path) -> Result<SecurityAgent> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    secop_api::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// The built-in modules, with the component files `modules` in place of
/// the built-ins of the same id; the ids those files define.
fn registry_with(cache_dir: Option<PathBuf>, modules: &[PathBuf]) -> Result<(Registry, Vec<String>)> {
    let runtime = Arc::new(Runtime::new(cache_dir).map_err(anyhow::Error::msg)?);
    let mut registry = Registry::with_builtins(runtime)
        .map_err(|e| anyhow::anyhow!("built-in feature `{}`: {}", e.feature, e.error))?;
    let mut loaded = vec![];
    for path in modules {
        let bytes = std::fs::read(path).with_context(|| format!("reading module {}", path.display()))?;
        loaded.push(registry.load(&path.display().to_string(), &bytes)?);
    }
    Ok((registry, loaded))
}

/// The cluster policy from `path`, or the default one.
fn read_policy(path: Option<&std::path::Path>) -> Result<secop_policy::ClusterPolicy> {
    let Some(path) = path else { return Ok(secop_policy::ClusterPolicy::default()) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the cluster policy {}", path.display()))?;
    secop_policy::ClusterPolicy::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn feature_summary(rendered: &Rendered) -> Vec<Value> {
    rendered
        .features
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "enabled": f.enabled,
                "priority": if f.priority == u32::MAX { Value::Null } else { json!(f.priority) },
                "module": f.module_digest.as_ref().map(|d| format!("sha256:{d}")),
                "objects": f.objects.len(),
                "receiver": f.receiver.as_ref().map(|r| format!("file_log/{}", r.name)),
                "diagnostics": f.diagnostics.iter().map(|d| format!("{:?} config.{}: {}", d.level, d.field, d.message).to_lowercase()).collect::<Vec<_>>(),
                "error": f.error.as_ref().map(ToString::to_string),
            })
        })
        .collect()
}

fn format_output(rendered: &Rendered, format: Format, only: Option<&str>) -> Result<String> {
    let objects: Vec<&Value> = rendered
        .objects
        .iter()
        .filter(|(key, _)| only.is_none_or(|name| rendered.owners.get(key).is_some_and(|owner| owner == name)))
        .map(|(_, v)| v)
        .collect();
    let features: Vec<Value> =
        feature_summary(rendered).into_iter().filter(|f| only.is_none_or(|name| f["name"] == name)).collect();
    Ok(match format {
        Format::Json => {
            serde_json::to_string_pretty(
                &json!({ "features": features, "warnings": rendered.warnings, "objects": objects }),
            )? + "\n"
        }
        Format::Yaml => {
            let mut out = String::from("# Desired state rendered by secop (offline).\n# Features:\n");
            for line in serde_yaml::to_string(&features)?.lines() {
                out.push_str("#   ");
                out.push_str(line);
                out.push('\n');
            }
            for w in &rendered.warnings {
                out.push_str(&format!("# warning: {w}\n"));
            }
            for object in objects {
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(object)?);
            }
            out
        }
    })
}
