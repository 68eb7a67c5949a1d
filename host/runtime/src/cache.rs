//! On-disk cache of precompiled components.
//!
//! Compiling a feature takes ~100 ms or more; deserializing its compiled
//! form takes about a millisecond. Entries are keyed by the sha256 of the
//! component bytes plus the engine's compatibility hash (wasmtime version,
//! target and settings), so a stale entry is never loaded by another engine.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompiledCache {
    /// Open (creating it if needed) a cache directory for `engine`.
    pub fn open(dir: PathBuf, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self { dir, engine_key: format!("{:016x}", hasher.finish()) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The precompiled component for `digest`, if present and loadable.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: only files this cache wrote (named by content digest and
        // engine key) are deserialized; the cache directory is the
        // operator's own and not shared with untrusted writers.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding unreadable precompiled module: {e}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Store a compiled component. Written to a temporary file and renamed,
    /// so a concurrent reader never sees half a file.
    pub fn put(&self, digest: &str, component: &Component) -> Result<(), String> {
        let bytes = component.serialize().map_err(|e| format!("serialize: {e}"))?;
        let path = self.path(digest);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(|e| format!("write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("rename to {}: {e}", path.display()))
    }

    /// Remove every entry (benchmarks measure cold compiles with this).
    pub fn clear(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "cwasm") {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}
