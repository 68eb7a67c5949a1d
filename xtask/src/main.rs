//! `cargo xtask <task>`: the project's build, test and benchmark entry points.
//!
//! Kept to plain `std::process::Command` (and serde_json) so it builds in
//! seconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

mod clients;
mod cluster;
mod datapath;
mod image;
mod node;
mod prereq;
mod pyfeature;
mod testimages;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test             the whole test suite (what CI runs)
  ctem-report      replay the sensor fixtures and Trivy reports through the real collectors into a
                   real Elasticsearch, then print the CTEM checklist (`secop ctem-report`)
  demo             as root: the real-node test on a fresh test cluster, which installs the chart with
                   helm, runs test/run-ctem-scenarios.sh and demo/live-demo.sh and prints their output
  bench [NAME]     benchmarks (render, operator, admission, trivy-sync, fetch, posture, real-node, latency; all by default); figures go in docs/benchmarks.md
  crd              regenerate deploy/crds/ from the Rust types
  chart            regenerate the Helm chart's CRD and feature RBAC rules
  golden           rewrite test/fixtures/golden/ from the current render
  build-features   build the feature components (target/wasm-features/wasm32-wasip2/wasm)
  image [--out DIR] [--tag TAG]
                   the operator image (static musl build, one layer, non-root) as an OCI image layout
                   (default target/image, tag = the crate version); push it with any OCI tool
  build-py-feature build the Python sample feature (features-wasm/kube_bench) with componentize-py; prints its path
  servers          build or fetch every test server (control plane, helm, collector, Elasticsearch)
  cluster build    build etcd, kube-apiserver/-controller-manager/-scheduler and kwok (cached)
  cluster up       start the test control plane on loopback with 3 kwok nodes and, as root, one
                   real node (kubelet, containerd, runc, bridge CNI, kube-proxy) with its registry
  cluster images   build the real node's images (operator, collector, sensor stand-ins, busybox)
                   and push them into the cluster's registry
  cluster down     stop it and remove every trace (pods, mounts, network namespaces, bridge)
  cluster env      print `export KUBECONFIG=...` for the running test cluster
";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(mut cmd: Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Run `cmd` (a `cargo test`) against the real servers: the control plane
/// (built once, cached), a shared Elasticsearch node and the collector
/// binary, passed in SECOP_* variables; always torn down afterwards.
fn with_test_servers(mut cmd: Command) -> Result<()> {
    let root = root();
    prereq::ensure(&prereq::for_this_machine())?;
    let helm = cluster::build_helm()?;
    let otelcol = datapath::build_otelcol(&root)?;
    let es_home = datapath::fetch_elasticsearch(&root)?;
    let registry = datapath::registry_bin()?;
    let (cosign, oras, wkg) = (clients::cosign()?, clients::oras()?, clients::wkg()?);
    cluster::up(&root)?;
    if node::supported() {
        // The real node's images: operator, collector, stand-ins, busybox.
        if let Err(e) = testimages::push_all(&root) {
            let _ = cluster::down(&root);
            return Err(e);
        }
        cmd.env("SECOP_NODE_NAME", node::NAME)
            .env("SECOP_NODE_IP", node::NODE_IP)
            .env("SECOP_NODE_TAINT", node::TAINT_KEY);
        for (name, reference) in testimages::references() {
            cmd.env(format!("SECOP_NODE_IMAGE_{name}"), reference);
        }
    }
    // One shared Elasticsearch node for the data-path tests (the durability
    // test starts its own, to stop it at will).
    let es_dir = root.join("target/test-elasticsearch");
    let _ = std::fs::remove_dir_all(&es_dir);
    let es = secop_test_harness::Elasticsearch::start(&es_home, &es_dir, secop_test_harness::free_port())
        .map_err(anyhow::Error::msg);
    let result = es.and_then(|es| {
        cmd.env("SECOP_HELM", &helm)
            .env("SECOP_KUBECTL", cluster::kubectl())
            .env("SECOP_E2E_KUBECONFIG", cluster::kubeconfig(&root))
            .env("SECOP_E2E_OPERATOR_KUBECONFIG", cluster::operator_kubeconfig(&root))
            .env("SECOP_E2E_OPERATOR_NAMESPACE", cluster::OPERATOR_NAMESPACE)
            .env("SECOP_E2E_WEBHOOK_ADDR", cluster::WEBHOOK_ADDR)
            .env("SECOP_E2E_AUDIT_LOG", cluster::audit_log(&root))
            .env("SECOP_OTELCOL", &otelcol)
            .env("SECOP_ES_HOME", &es_home)
            .env("SECOP_REGISTRY_BIN", &registry)
            .env("SECOP_COSIGN", &cosign)
            .env("SECOP_ORAS", &oras)
            .env("SECOP_WKG", &wkg)
            .env("SECOP_CHROMIUM", "/usr/bin/chromium")
            .env("SECOP_CHROMEDRIVER", "/usr/bin/chromedriver")
            .env("SECOP_E2E_ES_URL", es.url());
        let result = run(cmd);
        drop(es);
        result
    });
    if let Err(e) = cluster::down(&root) {
        eprintln!("warning: stopping the test cluster: {e}");
    }
    result
}

/// Run `cargo bench -p PACKAGE --bench BENCH` against a fresh real
/// Elasticsearch node (its URL in SECOP_E2E_ES_URL), stopped afterwards.
fn bench_on_elasticsearch(root: &Path, package: &str, bench: &str) -> Result<()> {
    let es_home = datapath::fetch_elasticsearch(root)?;
    let es_dir = root.join("target/bench-elasticsearch");
    let _ = std::fs::remove_dir_all(&es_dir);
    let es = secop_test_harness::Elasticsearch::start(&es_home, &es_dir, secop_test_harness::free_port())
        .map_err(anyhow::Error::msg)?;
    let mut cmd = cargo();
    cmd.args(["bench", "--locked", "-p", package, "--bench", bench]).env("SECOP_E2E_ES_URL", es.url());
    run(cmd)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => {
            let mut cmd = cargo();
            cmd.args(["test", "--workspace", "--locked", "--no-fail-fast"]).args(&args[1..]);
            prereq::ensure(&prereq::for_this_machine())?;
            // The Python sample feature, for host/secop/tests/python_feature.rs,
            // and componentize-py for the scaffolded one (tests/scaffold.rs).
            cmd.env("SECOP_PY_FEATURE", pyfeature::build(&root())?)
                .env("SECOP_COMPONENTIZE_PY", pyfeature::componentize_py()?);
            with_test_servers(cmd)
        }
        Some("demo") => {
            // The demo needs the real node: its test runs both scripts on
            // it against the stand-ins and prints what they print.
            if !node::supported() {
                bail!("cargo xtask demo needs the real node: run it as root (see README, \"The real node\")");
            }
            prereq::ensure(&prereq::for_this_machine())?;
            let mut cmd = cargo();
            cmd.args(["test", "--locked", "-p", "secop", "--test", "real_node", "--", "--nocapture"]);
            with_test_servers(cmd)
        }
        Some("ctem-report") => {
            // The replay e2e on real servers prints `secop ctem-report`
            // over what it wrote: run just that test and show its output.
            let mut cmd = cargo();
            cmd.args([
                "test",
                "--locked",
                "-p",
                "secop",
                "--test",
                "datapath",
                "sensor_events_reach_the_ctem_indices_through_the_real_collectors",
                "--",
                "--exact",
                "--nocapture",
            ]);
            with_test_servers(cmd)
        }
        Some("bench") => {
            // `cargo xtask bench [render|operator|admission|trivy-sync|console|fetch|posture|real-node|latency]`; all by default.
            let only = args.get(1).map(String::as_str);
            let root = root();
            if only.is_none_or(|b| b == "render") {
                let mut cmd = cargo();
                cmd.args(["bench", "--locked", "-p", "secop-engine", "--bench", "render"]);
                run(cmd)?;
            }
            if only.is_none_or(|b| b == "operator") {
                // The operator benchmark needs the real control plane.
                cluster::up(&root)?;
                let mut cmd = cargo();
                cmd.args(["bench", "--locked", "-p", "secop", "--bench", "operator"])
                    .env("SECOP_E2E_KUBECONFIG", cluster::kubeconfig(&root))
                    .env("SECOP_E2E_OPERATOR_KUBECONFIG", cluster::operator_kubeconfig(&root));
                let result = run(cmd);
                cluster::down(&root)?;
                result?;
            }
            if only.is_none_or(|b| b == "admission") {
                // Admission latency: kube-apiserver calling the operator's webhook.
                cluster::up(&root)?;
                let mut cmd = cargo();
                cmd.args(["bench", "--locked", "-p", "secop", "--bench", "admission"])
                    .env("SECOP_E2E_KUBECONFIG", cluster::kubeconfig(&root))
                    .env("SECOP_E2E_OPERATOR_KUBECONFIG", cluster::operator_kubeconfig(&root))
                    .env("SECOP_E2E_OPERATOR_NAMESPACE", cluster::OPERATOR_NAMESPACE)
                    .env("SECOP_E2E_WEBHOOK_ADDR", cluster::WEBHOOK_ADDR);
                let result = run(cmd);
                cluster::down(&root)?;
                result?;
            }
            if only.is_none_or(|b| b == "trivy-sync") {
                // trivy-sync throughput needs a real Elasticsearch node.
                bench_on_elasticsearch(&root, "secop-elastic", "trivy_sync")?;
            }
            if only.is_none_or(|b| b == "console") {
                // The console's pages at 10k, 100k and 1M events in a real node.
                bench_on_elasticsearch(&root, "secop-console", "pages")?;
            }
            if only.is_none_or(|b| b == "fetch") {
                // Feature modules from a real registry: cold vs cached start.
                let mut cmd = cargo();
                cmd.args(["bench", "--locked", "-p", "secop-oci", "--bench", "fetch"])
                    .env("SECOP_REGISTRY_BIN", datapath::registry_bin()?)
                    .env("SECOP_PY_FEATURE", pyfeature::build(&root)?);
                run(cmd)?;
            }
            if only.is_none_or(|b| b == "posture") {
                // The posture engine at 100k pods: pure, no servers needed.
                let mut cmd = cargo();
                cmd.args(["bench", "--locked", "-p", "secop-posture", "--bench", "posture"]);
                run(cmd)?;
            }
            if only.is_none_or(|b| b == "real-node") && node::supported() {
                // helm install → every pod Ready on the real node, and the
                // operator pods' memory from their cgroups: the real-node
                // test prints both.
                let mut cmd = cargo();
                cmd.args(["test", "--locked", "-p", "secop", "--test", "real_node", "--", "--nocapture"]);
                with_test_servers(cmd)?;
            }
            if only.is_none_or(|b| b == "latency") {
                // Line written → searchable, through the real collectors
                // into a real Elasticsearch node.
                let otelcol = datapath::build_otelcol(&root)?;
                let es_home = datapath::fetch_elasticsearch(&root)?;
                let es_dir = root.join("target/bench-elasticsearch");
                let _ = std::fs::remove_dir_all(&es_dir);
                let es = secop_test_harness::Elasticsearch::start(&es_home, &es_dir, secop_test_harness::free_port())
                    .map_err(anyhow::Error::msg)?;
                let mut cmd = cargo();
                cmd.args(["bench", "--locked", "-p", "secop", "--bench", "latency"])
                    .env("SECOP_OTELCOL", &otelcol)
                    .env("SECOP_E2E_ES_URL", es.url());
                run(cmd)?;
            }
            Ok(())
        }
        Some("crd") => {
            let out = cargo().args(["run", "--quiet", "--locked", "-p", "secop", "--", "crd"]).output()?;
            if !out.status.success() {
                bail!("secop crd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let path = root().join("deploy/crds/security.example.io_securityagents.yaml");
            std::fs::write(&path, out.stdout)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Some("chart") => {
            let secop = |args: &[&str]| -> Result<Vec<u8>> {
                let out = cargo().args(["run", "--quiet", "--locked", "-p", "secop", "--"]).args(args).output()?;
                if !out.status.success() {
                    bail!("secop {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                Ok(out.stdout)
            };
            let chart = root().join("deploy/helm/security-operator");
            let crd = secop(&["crd"])?;
            std::fs::write(root().join("deploy/crds/security.example.io_securityagents.yaml"), &crd)?;
            std::fs::write(chart.join("crds/security.example.io_securityagents.yaml"), &crd)?;
            std::fs::write(chart.join("files/feature-rules.json"), secop(&["feature-rules"])?)?;
            std::fs::write(root().join("docs/rbac.md"), secop(&["feature-rules", "--markdown"])?)?;
            println!("regenerated {}", chart.display());
            Ok(())
        }
        Some("golden") => {
            let mut cmd = cargo();
            cmd.args(["test", "--locked", "-p", "secop-engine", "--test", "render"]).env("UPDATE_GOLDEN", "1");
            run(cmd)
        }
        Some("build-features") => {
            // The embedding build script builds them (host/builtin/build.rs).
            let mut cmd = cargo();
            cmd.args(["build", "--locked", "-p", "secop-builtin"]);
            run(cmd)
        }
        Some("image") => {
            let root = root();
            let (mut out, mut tag) = (root.join("target/image"), env!("CARGO_PKG_VERSION").to_string());
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                let value = rest.next().with_context(|| format!("image: {flag} needs a value"))?;
                match flag.as_str() {
                    "--out" => out = PathBuf::from(value),
                    "--tag" => tag = value.clone(),
                    _ => bail!("image: unknown option {flag} (--out DIR, --tag TAG)"),
                }
            }
            let image = image::build(&root, &out, &tag)?;
            println!(
                "image layout: {} (tag {}, manifest {})",
                image.layout.display(),
                image.tag,
                image.manifest_digest
            );
            println!(
                "push it with e.g.: skopeo copy oci:{}:{} docker://REGISTRY/security-operator:{}",
                image.layout.display(),
                image.tag,
                image.tag
            );
            Ok(())
        }
        Some("build-py-feature") => {
            println!("{}", pyfeature::build(&root())?.display());
            Ok(())
        }
        Some("servers") => {
            // Build/fetch every test server without starting anything.
            let root = root();
            cluster::build()?;
            println!("helm: {}", cluster::build_helm()?.display());
            println!("otelcol: {}", datapath::build_otelcol(&root)?.display());
            println!("elasticsearch: {}", datapath::fetch_elasticsearch(&root)?.display());
            println!("registry: {}", datapath::registry_bin()?.display());
            println!("cosign: {}", clients::cosign()?.display());
            println!("oras: {}", clients::oras()?.display());
            println!("wkg: {}", clients::wkg()?.display());
            Ok(())
        }
        Some("cluster") => match args.get(1).map(String::as_str) {
            Some("build") => cluster::build().map(|b| {
                println!(
                    "etcd: {}\nkubernetes: {}\nkwok: {}",
                    b.etcd.display(),
                    b.kubernetes.display(),
                    b.kwok.display()
                )
            }),
            Some("up") => prereq::ensure(&prereq::for_this_machine()).and_then(|()| cluster::up(&root())),
            Some("images") => {
                testimages::push_all(&root())?;
                for (name, reference) in testimages::references() {
                    println!("{name}: {reference}");
                }
                Ok(())
            }
            Some("down") => cluster::down(&root()),
            Some("env") => {
                let root = root();
                println!("export KUBECONFIG={}", cluster::kubeconfig(&root).display());
                println!("export SECOP_E2E_KUBECONFIG={}", cluster::kubeconfig(&root).display());
                println!("export SECOP_KUBECTL={}", cluster::kubectl().display());
                println!("export SECOP_E2E_OPERATOR_KUBECONFIG={}", cluster::operator_kubeconfig(&root).display());
                println!("export SECOP_E2E_OPERATOR_NAMESPACE={}", cluster::OPERATOR_NAMESPACE);
                println!("export SECOP_E2E_WEBHOOK_ADDR={}", cluster::WEBHOOK_ADDR);
                println!("export SECOP_E2E_AUDIT_LOG={}", cluster::audit_log(&root).display());
                if node::supported() {
                    println!(
                        "export SECOP_NODE_NAME={} SECOP_NODE_IP={} SECOP_NODE_TAINT={}",
                        node::NAME,
                        node::NODE_IP,
                        node::TAINT_KEY
                    );
                    for (name, reference) in testimages::references() {
                        println!("export SECOP_NODE_IMAGE_{name}={reference}");
                    }
                }
                Ok(())
            }
            _ => {
                eprint!("{USAGE}");
                bail!("cluster: build, up, images, down or env")
            }
        },
        _ => {
            eprint!("{USAGE}");
            bail!("unknown or missing task")
        }
    }
}
