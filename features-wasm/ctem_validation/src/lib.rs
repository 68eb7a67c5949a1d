//! Continuous CTEM validation (`spec.tests` of the agent; the host hands
//! it to this feature as its config). A CronJob in the agent's namespace
//! runs, on `schedule`, one pod of two steps:
//!
//! 1. `scenarios` (init container, busybox): performs the behaviour of the
//!    MITRE scenarios B–E itself, as test/scenarios/README.md describes it
//!    for `kubectl exec`: a shell with a terminal started by the runtime,
//!    a token read and the API server contacted, namespace and mount
//!    attempts, a cron file written. It holds no credentials: the pod
//!    mounts no token into it, and scenario C reads a placeholder written
//!    at the token's path.
//! 2. `check` (the operator image): `secop validate` waits until every
//!    enabled tool's detection of each scenario has arrived for this pod,
//!    writes one result document per scenario to the events index and the
//!    agent's `status.validation`. Its token is projected into this
//!    container only.

use secop_feature_sdk::k8s;
use secop_feature_sdk::*;
use serde::Deserialize;

pub const ID: &str = "ctem_validation";
const NAME: &str = "ctem-validation";
pub const DEFAULT_IMAGE: &str = "docker.io/library/busybox:1.36.1";
pub const SCENARIOS: &[&str] = &[
    "scope-inventory",
    "validate-shell",
    "validate-k8s-api",
    "validate-container-escape",
    "validate-cron-persistence",
];
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ValidationConfig {
    /// Scenarios to run and check; empty = all.
    pub scenarios: Vec<String>,
    /// CronJob schedule of a run.
    pub schedule: String,
    /// Image performing the scenarios (busybox's applets are used).
    pub image: String,
    /// How long the check waits for the detections.
    pub timeout_seconds: u32,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            scenarios: vec![],
            schedule: "@hourly".to_string(),
            image: DEFAULT_IMAGE.to_string(),
            timeout_seconds: 300,
        }
    }
}

/// The scenario behaviour, in busybox sh. Every tool a detection expects
/// to see exec'd is run by its path with `exec` in a subshell: busybox's
/// shell runs applets called by name inside busybox itself (the exec, if
/// any, is of /bin/busybox), which Tetragon's process_exec would report
/// under another binary. Attempts that fail (mount, nsenter) are the point.
/// The behaviour runs twice, a second apart: a sensor that drops one event
/// under load must not fail a run (the check needs one detection per tool).
const SCENARIO_SCRIPT: &str = r#"
say() { echo "ctem-validation: $*"; }
bin() { for d in /bin /usr/bin /sbin /usr/sbin; do [ -x "$d/$1" ] && { echo "$d/$1"; return; }; done; echo "$1"; }
# B: this shell has a terminal and was started by the runtime. A moment for
# the pod's status to name this container, for a sensor that maps
# containers to pods through the API server.
sleep 2
round() {
  if want validate-shell; then
    say "$1 B T1059.004: a shell with a terminal (this one), then the scenario's command"
    (exec "$(bin sh)" -c "whoami && id && uname -a")
  fi
  if want validate-k8s-api; then
    say "$1 C T1552.001: token read (a placeholder at the token's path), API server contacted"
    mkdir -p TOKEN_DIR && echo "ctem-validation placeholder, not a token" > TOKEN_DIR/token
    (exec "$(bin cat)" TOKEN_DIR/token) >/dev/null
    (exec "$(bin wget)" -q -T 2 --no-check-certificate -O /dev/null https://kubernetes.default.svc) 2>/dev/null || say "(the API server answered with an error or not at all: the contact is what counts)"
  fi
  if want validate-container-escape; then
    say "$1 D T1611: namespaces listed, mount and nsenter attempted (both fail: the pod is unprivileged)"
    (exec "$(bin ls)" -la /proc/1/ns/) >/dev/null
    (exec "$(bin mount)" -t proc proc /mnt) 2>/dev/null || say "mount failed"
    (exec "$(bin nsenter)" --target 1 --mount -- /bin/sh -c 'echo escaped') 2>/dev/null || say "nsenter failed"
  fi
  if want validate-cron-persistence; then
    say "$1 E T1053.003: a cron file written"
    mkdir -p /etc/cron.d && echo '* * * * * root /tmp/backdoor.sh' > /etc/cron.d/backdoor || say "blocked"
  fi
}
round 1/2
sleep 1
round 2/2
say done
"#;

#[derive(Debug, Default)]
pub struct Validation {
    ctx: Context,
    config: ValidationConfig,
}

impl Validation {
    fn selected(&self) -> Vec<&str> {
        if self.config.scenarios.is_empty() {
            SCENARIOS.to_vec()
        } else {
            self.config.scenarios.iter().map(String::as_str).collect()
        }
    }

    fn script(&self) -> String {
        let wanted = self.selected().join(" ");
        let prelude = format!("want() {{ case \" {wanted} \" in *\" $1 \"*) return 0;; esac; return 1; }}\n");
        prelude + &SCENARIO_SCRIPT.replace("TOKEN_DIR", TOKEN_DIR)
    }

    fn cronjob(&self) -> Value {
        let ctx = &self.ctx;
        let output = &ctx.output;
        let mut args = vec![
            "validate".to_string(),
            "--pod=$(POD_NAME)".to_string(),
            format!("--agent={}/{}", ctx.namespace, ctx.agent_name),
            format!("--scenarios={}", self.selected().join(",")),
            format!("--index-events={}", output.index_events),
            format!("--index-inventory={}", output.index_inventory),
            format!("--cluster-name={}", ctx.cluster_name),
            format!("--timeout-seconds={}", self.config.timeout_seconds),
        ];
        let es = k8s::secop_elasticsearch(output);
        args.extend(es.args);
        let mut env = vec![k8s::field_env("POD_NAME", "metadata.name")];
        env.extend(es.env);
        let mut mounts = vec![k8s::mount("token", TOKEN_DIR, true)];
        mounts.extend(es.mounts);
        let mut volumes = vec![json!({ "name": "token", "projected": { "sources": [
            { "serviceAccountToken": { "path": "token", "expirationSeconds": 3600 } },
            { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
            { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "fieldPath": "metadata.namespace" } }] } },
        ] } })];
        volumes.extend(es.volumes);
        let pod_spec = json!({
            "serviceAccountName": NAME,
            // The scenarios' container gets no token; the check's is
            // projected into it alone (volume `token`).
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "securityContext": { "seccompProfile": { "type": "RuntimeDefault" } },
            "initContainers": [{
                "name": "scenarios",
                "image": self.config.image,
                "imagePullPolicy": "IfNotPresent",
                // A terminal, and the runtime as the shell's parent: what
                // `kubectl exec -it` gives scenario B.
                "tty": true,
                "stdin": true,
                "command": ["sh", "-c", self.script()],
                // Root in the container (to write /etc/cron.d, as the
                // scenario does), with no capability and no escalation.
                // No seccomp filter: RuntimeDefault refuses mount and setns
                // before the syscall tracepoints, so no sensor could see
                // scenario D; the attempts must reach the kernel (and fail
                // there, for want of CAP_SYS_ADMIN), as an attacker's would.
                "securityContext": {
                    "runAsUser": 0,
                    "allowPrivilegeEscalation": false,
                    "capabilities": { "drop": ["ALL"] },
                    "seccompProfile": { "type": "Unconfined" },
                },
                "resources": k8s::resources("10m", "16Mi", "200m", "64Mi"),
            }],
            "containers": [{
                "name": "check",
                "image": ctx.operator_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["secop"],
                "args": args,
                "env": env,
                "securityContext": k8s::restricted_security_context(),
                "resources": k8s::resources("10m", "32Mi", "200m", "128Mi"),
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        });
        json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": k8s::namespaced_meta(ctx, NAME, NAME),
            "spec": {
                "schedule": self.config.schedule,
                "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": 1,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": { "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": 600 + self.config.timeout_seconds,
                    "ttlSecondsAfterFinished": 86400,
                    "template": { "metadata": { "labels": k8s::labels(NAME) }, "spec": pod_spec },
                }},
            },
        })
    }
}

impl Feature for Validation {
    fn metadata(&self) -> Metadata {
        Metadata {
            id: ID.to_string(),
            priority: 300,
            contract_version: CONTRACT_VERSION.to_string(),
            description:
                "Continuous CTEM validation: scenario behaviour on a schedule, detections checked in Elasticsearch"
                    .to_string(),
            condition_type: "ValidationScheduled".to_string(),
        }
    }

    fn configure(&mut self, config_json: &str, ctx: &Context) -> Result<Vec<Diagnostic>, ConfigError> {
        let (config, diagnostics): (ValidationConfig, _) = decode_config(config_json)?;
        for (i, name) in config.scenarios.iter().enumerate() {
            if !SCENARIOS.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    format!("scenarios[{i}]"),
                    format!("unknown scenario `{name}`; known: {}", SCENARIOS.join(", ")),
                ));
            }
        }
        if !k8s::valid_cron_schedule(&config.schedule) {
            return Err(ConfigError::new(
                "schedule",
                format!("`{}` is not a cron schedule (5 fields, @hourly/@daily/..., or `@every 1h`)", config.schedule),
            ));
        }
        if config.image.trim().is_empty() {
            return Err(ConfigError::new("image", "must name an image"));
        }
        if !(30..=3600).contains(&config.timeout_seconds) {
            return Err(ConfigError::new("timeoutSeconds", "must be between 30 and 3600"));
        }
        if ctx.output.endpoints.is_empty() {
            return Err(ConfigError::new(
                "output.elasticsearch.endpoints",
                "validation checks the detections in Elasticsearch: name an endpoint",
            ));
        }
        self.ctx = ctx.clone();
        self.config = config;
        Ok(diagnostics)
    }

    fn contribute(&mut self) -> Result<Vec<String>, String> {
        let ctx = &self.ctx;
        // The check reads its own agent (which tools are enabled) and
        // writes that agent's status.validation: nothing else.
        let rules = json!([
            { "apiGroups": ["security.example.io"], "resources": ["securityagents"], "resourceNames": [ctx.agent_name], "verbs": ["get"] },
            { "apiGroups": ["security.example.io"], "resources": ["securityagents/status"], "resourceNames": [ctx.agent_name], "verbs": ["patch"] },
        ]);
        Ok(to_documents(vec![
            k8s::service_account(ctx, NAME, NAME),
            k8s::role(ctx, NAME, NAME, rules),
            k8s::role_binding(ctx, NAME, NAME, NAME, NAME),
            self.cronjob(),
        ]))
    }

    fn assess(&mut self, cluster: &dyn ClusterReader) -> Condition {
        let make = |status, reason: &str, message: String| Condition {
            type_: "ValidationScheduled".to_string(),
            status,
            reason: reason.to_string(),
            message,
        };
        match cluster.get("batch/v1", "CronJob", NAME) {
            Ok(_) => make(
                ConditionStatus::True,
                "Scheduled",
                format!("CronJob {NAME} runs the scenarios on `{}`", self.config.schedule),
            ),
            Err(LookupError::NotFound) => {
                make(ConditionStatus::False, "NotFound", format!("CronJob {NAME} does not exist yet"))
            }
            Err(LookupError::Unavailable(why)) => {
                make(ConditionStatus::Unknown, "ClusterUnavailable", format!("cannot read CronJob {NAME}: {why}"))
            }
            Err(LookupError::Denied(why)) => make(ConditionStatus::Unknown, "LookupDenied", why),
        }
    }
}

export_feature!(Validation);

#[cfg(test)]
mod tests {
    use super::*;

    fn configured(config: &str) -> Result<Validation, ConfigError> {
        let mut v = Validation::default();
        let ctx = Context {
            namespace: "security-system".into(),
            agent_name: "poc".into(),
            operator_image: "secop:dev".into(),
            output: OutputSettings { endpoints: vec!["https://es:9200".into()], ..Default::default() },
            ..Default::default()
        };
        v.configure(config, &ctx)?;
        Ok(v)
    }

    #[test]
    fn the_scenarios_run_with_a_terminal_and_no_token_the_check_with_one() {
        let mut v =
            configured(r#"{"scenarios":["validate-shell","validate-cron-persistence"],"schedule":"@every 30m"}"#)
                .unwrap();
        let objects: Vec<Value> = v.contribute().unwrap().iter().map(|o| serde_json::from_str(o).unwrap()).collect();
        let cron = objects.iter().find(|o| o["kind"] == "CronJob").unwrap();
        assert_eq!(cron["spec"]["schedule"], "@every 30m");
        let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        let scenarios = &pod["initContainers"][0];
        assert_eq!(scenarios["tty"], true);
        assert!(scenarios.get("volumeMounts").is_none(), "no token in the scenarios' container");
        let script = scenarios["command"][2].as_str().unwrap();
        assert!(
            script.contains(" validate-shell validate-cron-persistence ") && script.contains("/etc/cron.d/backdoor"),
            "{script}"
        );
        let check = &pod["containers"][0];
        assert!(check["volumeMounts"].as_array().unwrap().iter().any(|m| m["mountPath"] == TOKEN_DIR));
        assert!(check["args"].as_array().unwrap().contains(&json!("--agent=security-system/poc")));
        let role = objects.iter().find(|o| o["kind"] == "Role").unwrap();
        assert!(
            role["rules"].as_array().unwrap().iter().all(|r| r["resourceNames"] == json!(["poc"])),
            "only its own agent"
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        assert_eq!(configured(r#"{"scenarios":["validate-shell","nope"]}"#).unwrap_err().field, "scenarios[1]");
        assert_eq!(configured(r#"{"schedule":"sometimes"}"#).unwrap_err().field, "schedule");
        assert_eq!(configured(r#"{"image":" "}"#).unwrap_err().field, "image");
        assert_eq!(configured(r#"{"timeoutSeconds":5}"#).unwrap_err().field, "timeoutSeconds");
    }
}
