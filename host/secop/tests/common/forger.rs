//! A sender of forged alerts, shared by the data-path test (collectors on
//! this machine) and the real-node test (a plain pod): one collector that
//! reads a file of forged alerts and sends each line once per sender, each
//! with its own TLS settings, tagged `sender: <name>` in the body.
#![allow(dead_code)]

use serde_json::{Value, json};

/// A Falco alert as a forger would write it, one JSON line. The time is
/// an RFC 3339 string: the collector's JSON parser reads numbers as floats,
/// which the `date` field refuses.
pub fn forged_alert() -> String {
    let alert = json!({
        "@timestamp": jiff::Timestamp::now().to_string(),
        "labels": { "security_tool": "falco" },
        "event": { "kind": "alert", "severity": 5 },
        "forged": true,
    });
    format!("{alert}\n")
}

/// The sender's collector config: `file` read from the beginning, one
/// pipeline per (name, TLS settings) to `endpoint`, no retry and no queue
/// (a refused send stays refused); a health check on `health` if given.
pub fn sender_config(file: &str, endpoint: &str, senders: &[(&str, Value)], health: Option<u16>) -> Value {
    let mut config = json!({
        "receivers": { "file_log/forged": {
            "include": [file],
            "start_at": "beginning",
            "operators": [{ "type": "json_parser", "parse_to": "body" }],
        } },
        "processors": {},
        "exporters": {},
        "service": { "pipelines": {}, "telemetry": { "metrics": { "level": "none" } } },
    });
    if let Some(port) = health {
        config["extensions"] = json!({ "health_check": { "endpoint": format!("127.0.0.1:{port}") } });
        config["service"]["extensions"] = json!(["health_check"]);
    }
    for (name, tls) in senders {
        config["processors"][format!("transform/{name}")] = json!({ "log_statements": [{ "context": "log",
            "statements": [format!("set(log.body[\"sender\"], \"{name}\")")] }] });
        config["exporters"][format!("otlp_grpc/{name}")] = json!({
            "endpoint": endpoint,
            "tls": tls,
            "retry_on_failure": { "enabled": false },
            "sending_queue": { "enabled": false },
        });
        config["service"]["pipelines"][format!("logs/{name}")] = json!({
            "receivers": ["file_log/forged"],
            "processors": [format!("transform/{name}")],
            "exporters": [format!("otlp_grpc/{name}")],
        });
    }
    config
}
