//! The loaded feature modules by feature name, and where each one's code
//! comes from. Per-agent modules (`features[].module`) are not here: the
//! operator resolves them per reconcile and hands them to the render.

use std::collections::BTreeMap;
use std::sync::Arc;

use secop_feature_sdk::model as m;
use secop_runtime::{LoadError, Module, Runtime};

use crate::instance::NativeFactory;
use crate::memo::Memo;

/// Where a feature's code comes from.
#[derive(Clone)]
pub enum Entry {
    /// A WASM component, run in the sandbox (the operator's only kind).
    Wasm(Module),
    /// The same feature compiled into the host (benchmarks and tests).
    Native { metadata: m::Metadata, factory: NativeFactory },
}

impl Entry {
    pub fn metadata(&self) -> &m::Metadata {
        match self {
            Entry::Wasm(module) => &module.metadata,
            Entry::Native { metadata, .. } => metadata,
        }
    }

    /// sha256 of the component; None for native features.
    pub fn digest(&self) -> Option<&str> {
        match self {
            Entry::Wasm(module) => Some(&module.digest),
            Entry::Native { .. } => None,
        }
    }
}

/// The loaded feature modules by feature name.
pub struct Registry {
    runtime: Arc<Runtime>,
    modules: BTreeMap<String, Entry>,
    memo: Memo,
}

/// A built-in module that failed to load at startup.
#[derive(Debug, thiserror::Error)]
#[error("built-in feature `{feature}`: {error}")]
pub struct RegistryError {
    pub feature: String,
    pub error: LoadError,
}

impl Registry {
    /// A registry with the seven embedded built-in modules.
    pub fn with_builtins(runtime: Arc<Runtime>) -> Result<Self, RegistryError> {
        let mut registry = Self { runtime, modules: BTreeMap::new(), memo: Memo::default() };
        for (id, bytes) in secop_builtin::MODULES {
            let module =
                registry.runtime.load(id, bytes).map_err(|error| RegistryError { feature: id.to_string(), error })?;
            registry.modules.insert(id.to_string(), Entry::Wasm(module));
        }
        Ok(registry)
    }

    /// An empty registry (tests, author tooling).
    pub fn empty(runtime: Arc<Runtime>) -> Self {
        Self { runtime, modules: BTreeMap::new(), memo: Memo::default() }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Load `bytes` and register it under the id it declares (replacing a
    /// module of the same id). Returns that id.
    pub fn load(&mut self, origin: &str, bytes: &[u8]) -> Result<String, LoadError> {
        let module = self.runtime.load(origin, bytes)?;
        let id = module.metadata.id.clone();
        self.modules.insert(id.clone(), Entry::Wasm(module));
        Ok(id)
    }

    pub fn insert(&mut self, module: Module) {
        self.modules.insert(module.metadata.id.clone(), Entry::Wasm(module));
    }

    /// Register a natively compiled feature under the id it declares.
    pub fn insert_native(&mut self, factory: NativeFactory) {
        let metadata = factory().metadata();
        self.modules.insert(metadata.id.clone(), Entry::Native { metadata, factory });
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.modules.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.modules.keys().map(String::as_str)
    }
}

impl Registry {
    /// What is remembered of each agent's features between renders.
    pub fn memo(&self) -> &Memo {
        &self.memo
    }
}
