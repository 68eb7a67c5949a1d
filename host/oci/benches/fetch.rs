//! Cold fetch + compile vs cached start, per feature module, against a
//! real OCI registry (Debian's docker-registry on loopback; `cargo xtask
//! bench fetch` starts one).
//!
//! - cold: empty module cache and no precompiled cache: pull from the
//!   registry (manifest, config, layer), verify, write the cache, compile;
//! - cached: what a restarted operator does with `IfNotPresent`: read the
//!   cached component (re-verifying its sha256) and deserialize the
//!   precompiled form, no network.
//!
//! Each also signed (a cosign-format signature under its `.sig` tag) and
//! started with a key to verify: the added cost of the signature check,
//! cold (the `.sig` manifest and payload from the registry, then the
//! check) and cached (the kept signature checked again, no network).
//!
//! The built-in (Rust) modules, plus the Python sample feature when
//! SECOP_PY_FEATURE names its component.

use std::path::Path;
use std::time::{Duration, Instant};

use secop_oci::signature::SignerSet;
use secop_oci::{
    Credentials, Enforcement, Layout, ModuleStore, PullPolicy, SigningKey, Source, TrustedKey, Verification,
};
use secop_runtime::Runtime;

const ROUNDS: usize = 5;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let Some(bin) = std::env::var_os("SECOP_REGISTRY_BIN") else {
        eprintln!("fetch bench: needs docker-registry (run `cargo xtask bench fetch`, which provides it)");
        return;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fetch-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let registry =
        secop_test_harness::Registry::start(Path::new(&bin), &dir.join("registry"), secop_test_harness::free_port())
            .unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pusher = ModuleStore::new(dir.join("push-cache"), vec![registry.host()]);

    let key = SigningKey::generate().unwrap();
    let trusted = TrustedKey::from_pem("bench", key.public_key_pem().unwrap().as_bytes()).unwrap();
    let verification = Verification {
        sets: vec![SignerSet { required_by: "bench".into(), keys: vec![trusted] }],
        enforcement: Enforcement::Enforce,
    };
    println!(
        "feature module start: cold (registry pull + digest checks + compile) vs cached (cache read + digest check + deserialize), each without and with a signature check; median of {ROUNDS}"
    );
    println!("| module | size | cold | cold, signed | cached | cached, signed | cold/cached |");
    println!("|---|---|---|---|---|---|---|");
    // The built-ins, and the Python feature when built (`cargo xtask bench
    // fetch` builds it): an 18 MB component with an embedded CPython.
    let mut modules: Vec<(&str, Vec<u8>)> =
        secop_builtin::MODULES.iter().map(|(id, bytes)| (*id, bytes.to_vec())).collect();
    match std::env::var_os("SECOP_PY_FEATURE") {
        Some(path) => modules.push(("kube_bench", std::fs::read(path).expect("SECOP_PY_FEATURE"))),
        None => eprintln!("fetch bench: SECOP_PY_FEATURE not set, the Python feature is left out"),
    }
    for (id, bytes) in &modules {
        let bytes = bytes.as_slice();
        let image = format!("{}/features/{id}:bench", registry.host());
        tokio.block_on(pusher.push(&image, bytes, Default::default(), Layout::Secop, &Credentials::Anonymous)).unwrap();
        tokio.block_on(pusher.sign(&image, &key, &Credentials::Anonymous)).unwrap();
        let source = |policy, signed: bool| Source {
            feature: id.to_string(),
            image: image.clone(),
            sha256: None,
            pull_policy: policy,
            credentials: Credentials::Anonymous,
            verify: signed.then(|| verification.clone()),
        };
        // A process start: open the module store and the runtime over
        // `cache`, fetch with `policy`, load.
        let start = |cache: &Path, policy, signed: bool| {
            let began = Instant::now();
            let store = ModuleStore::new(cache.join("oci"), vec![registry.host()]);
            let fetched = tokio.block_on(store.fetch(&source(policy, signed))).unwrap();
            assert_eq!(matches!(fetched.signature, secop_oci::SignatureState::Verified(_)), signed);
            let runtime = Runtime::new(Some(cache.join("compiled"))).unwrap();
            let module = runtime.load(id, &fetched.bytes).unwrap();
            let took = began.elapsed();
            assert_eq!(module.metadata.id, *id);
            (took, fetched.origin, module.source)
        };
        let mut samples: [Vec<Duration>; 4] = Default::default();
        for round in 0..ROUNDS {
            for (signed, cold, cached) in [(false, 0, 2), (true, 1, 3)] {
                let cache = dir.join(format!("cache-{id}-{round}-{signed}"));
                // Cold: nothing on disk.
                let (took, origin, _) = start(&cache, PullPolicy::Always, signed);
                assert_eq!(origin, secop_oci::Origin::Registry);
                samples[cold].push(took);
                // Cached: a restarted process, same directories.
                let (took, origin, compiled) = start(&cache, PullPolicy::IfNotPresent, signed);
                assert_eq!((origin, compiled), (secop_oci::Origin::Cache, secop_runtime::LoadSource::Cache));
                samples[cached].push(took);
            }
        }
        let [cold, cold_signed, cached, cached_signed] = samples.map(median);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {id} | {} KiB | {:.1} ms | {:.1} ms (+{:.1}) | {:.1} ms | {:.1} ms (+{:.1}) | {:.0}x |",
            bytes.len() / 1024,
            ms(cold),
            ms(cold_signed),
            ms(cold_signed) - ms(cold),
            ms(cached),
            ms(cached_signed),
            ms(cached_signed) - ms(cached),
            cold.as_secs_f64() / cached.as_secs_f64()
        );
    }
}
