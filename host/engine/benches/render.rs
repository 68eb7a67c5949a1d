//! Benchmarks of the feature runtime (`cargo bench -p secop-engine` or
//! `cargo xtask bench`). Prints figures and ratios; asserts nothing about
//! time. Targets (issue 2): warm desired state for the full sample ≤ 2 ms,
//! WASM/native ≤ 3×, module load from cache ≤ 5 ms vs compile ≤ 300 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secop_engine::{Registry, RenderOptions};
use secop_runtime::{LoadSource, Runtime};

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn time_renders(
    registry: &Registry,
    agent: &secop_api::SecurityAgent,
    iterations: usize,
    memoize: bool,
) -> (Duration, Duration) {
    let options = RenderOptions { memoize, ..Default::default() };
    for _ in 0..20 {
        std::hint::black_box(secop_engine::render(registry, agent, &options).unwrap());
    }
    let mut samples: Vec<Duration> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            let rendered = secop_engine::render(registry, agent, &options).unwrap();
            let elapsed = start.elapsed();
            let failed: Vec<String> = rendered.failed().filter_map(|f| f.error_line()).collect();
            assert!(failed.is_empty(), "{failed:?}");
            std::hint::black_box(rendered);
            elapsed
        })
        .collect();
    (percentile(&mut samples, 0.5), percentile(&mut samples, 0.95))
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sample = std::fs::read_to_string(root.join("deploy/samples/securityagent_full.yaml")).unwrap();
    let agent = secop_api::parse(&sample).unwrap();
    let cache_dir = std::env::temp_dir().join(format!("secop-bench-cache-{}", std::process::id()));
    let runtime = Arc::new(Runtime::new(Some(cache_dir.clone())).unwrap());
    let iterations = 300;

    println!(
        "secop feature runtime benchmark ({iterations} iterations, full sample: {} features and spec.tests)",
        agent.spec.features.len()
    );

    // Module load: compile (cache cleared) vs deserialize from the cache.
    println!("\nmodule load (median of 5)            compile     from cache   ratio");
    let cache = runtime.cache().expect("cache");
    let (mut compile_total, mut cached_total) = (Duration::ZERO, Duration::ZERO);
    for (id, bytes) in secop_builtin::MODULES {
        let mut compiled = vec![];
        let mut cached = vec![];
        for _ in 0..5 {
            cache.clear().unwrap();
            let m = runtime.load(id, bytes).unwrap();
            assert_eq!(m.source, LoadSource::Compiled);
            compiled.push(m.load_time);
            let m = runtime.load(id, bytes).unwrap();
            assert_eq!(m.source, LoadSource::Cache);
            cached.push(m.load_time);
        }
        let (c, w) = (percentile(&mut compiled, 0.5), percentile(&mut cached, 0.5));
        compile_total += c;
        cached_total += w;
        println!(
            "  {id:<14} {:>5} KiB   {:>11}   {:>11}   {:>5.0}x",
            bytes.len() / 1024,
            ms(c),
            ms(w),
            c.as_secs_f64() / w.as_secs_f64()
        );
    }
    println!("  {:<24} {:>11}   {:>11}", "all", ms(compile_total), ms(cached_total));

    // Warm desired state, WASM and native, through the same pipeline.
    let wasm = Registry::with_builtins(runtime.clone()).unwrap_or_else(|e| panic!("{}: {}", e.feature, e.error));
    let mut native = Registry::empty(runtime.clone());
    native.insert_native(|| Box::new(feature_otel_pipeline::OtelPipeline::default()));
    native.insert_native(|| Box::new(feature_falco::Falco::default()));
    native.insert_native(|| Box::new(feature_tetragon::Tetragon::default()));
    native.insert_native(|| Box::new(feature_osquery::Osquery::default()));
    native.insert_native(|| Box::new(feature_trivy::Trivy::default()));
    native.insert_native(|| Box::new(feature_posture::Posture::default()));
    native.insert_native(|| Box::new(feature_ctem_validation::Validation::default()));
    let (memo_p50, memo_p95) = time_renders(&wasm, &agent, iterations, true);
    let (wasm_p50, wasm_p95) = time_renders(&wasm, &agent, iterations, false);
    let (native_p50, native_p95) = time_renders(&native, &agent, iterations, false);
    println!("\nwarm desired state, full sample       p50          p95");
    println!("  wasm, unchanged agent (memo) {:>11}   {:>11}", ms(memo_p50), ms(memo_p95));
    println!("  every feature call executed:");
    println!("  wasm (sandboxed)             {:>11}   {:>11}", ms(wasm_p50), ms(wasm_p95));
    println!("  native (same features)       {:>11}   {:>11}", ms(native_p50), ms(native_p95));
    let per_feature = |registry: &Registry| {
        let options = RenderOptions { memoize: false, ..Default::default() };
        let rendered = secop_engine::render(registry, &agent, &options).unwrap();
        rendered.features.iter().map(|f| format!("{} {}", f.name, ms(f.call_time))).collect::<Vec<_>>().join(", ")
    };
    println!("  feature calls, wasm:   {}", per_feature(&wasm));
    println!("  feature calls, native: {}", per_feature(&native));
    println!(
        "  wasm/native ratio            {:>10.2}x   {:>10.2}x",
        wasm_p50.as_secs_f64() / native_p50.as_secs_f64(),
        wasm_p95.as_secs_f64() / native_p95.as_secs_f64()
    );

    let _ = std::fs::remove_dir_all(cache_dir);
}
