//! On-disk cache of precompiled components.
//!
//! Compiling a feature takes ~100 ms or more; deserializing its compiled
//! form takes about a millisecond. Entries are keyed by the sha256 of the
//! component bytes plus the engine's compatibility hash (wasmtime version,
//! target and settings), so a stale entry is never loaded by another engine.
//!
//! Deserializing is native code trusted as is: whoever can write the cache
//! directory (a shared volume, say) could run code in the operator. With a
//! key (the operator's: a Secret the chart creates, else a random key per
//! process), every entry carries an HMAC-SHA256 tag written when it was
//! compiled, and an entry whose tag does not verify is discarded before it
//! is deserialized. Without a key (the CLI on the user's own cache) entries
//! are trusted as the user's own files.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    engine_key: String,
    /// Tags entries; None: entries are trusted unverified.
    key: Option<ring::hmac::Key>,
}

impl std::fmt::Debug for CompiledCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledCache").field("dir", &self.dir).field("verified", &self.key.is_some()).finish()
    }
}

impl CompiledCache {
    /// Open (creating it if needed) a cache directory for `engine`.
    pub fn open(dir: PathBuf, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self { dir, engine_key: format!("{:016x}", hasher.finish()), key: None })
    }

    /// Tag every entry written from now on with `secret`, and load only
    /// entries whose tag verifies.
    pub fn with_key(mut self, secret: &[u8]) -> Self {
        self.key = Some(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret));
        self
    }

    /// Whether entries are verified before they are loaded.
    pub fn verified(&self) -> bool {
        self.key.is_some()
    }

    fn tag_path(&self, digest: &str) -> PathBuf {
        self.path(digest).with_extension("cwasm.tag")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The precompiled component for `digest`, if present, authentic (with
    /// a key) and loadable.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        let loaded = match &self.key {
            Some(key) => {
                let bytes = std::fs::read(&path).ok()?;
                let tag = std::fs::read_to_string(self.tag_path(digest)).ok().and_then(|t| hex::decode(t.trim()).ok());
                if tag.is_none_or(|tag| ring::hmac::verify(key, &bytes, &tag).is_err()) {
                    tracing::warn!(path = %path.display(), "discarding a precompiled module whose tag does not verify (not written by this operator)");
                    self.discard(digest);
                    return None;
                }
                // SAFETY: the bytes are the ones this cache serialized: their
                // HMAC verifies under the key only the operator holds.
                unsafe { Component::deserialize(engine, &bytes) }
            }
            // SAFETY: without a key the cache directory is the user's own
            // (the CLI); see the module comment.
            None => unsafe { Component::deserialize_file(engine, &path) },
        };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding unreadable precompiled module: {e}");
                self.discard(digest);
                None
            }
        }
    }

    fn discard(&self, digest: &str) {
        let _ = std::fs::remove_file(self.path(digest));
        let _ = std::fs::remove_file(self.tag_path(digest));
    }

    /// Store a compiled component (and its tag, with a key). Written to
    /// temporary files and renamed, so a concurrent reader never sees half
    /// a file; the tag goes first, so an entry is never without it.
    pub fn put(&self, digest: &str, component: &Component) -> Result<(), PutError> {
        let bytes = component.serialize().map_err(|cause| PutError::Serialize { cause })?;
        let write = |path: PathBuf, data: &[u8]| {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, data).map_err(|source| PutError::Write { path: tmp.clone(), source })?;
            std::fs::rename(&tmp, &path).map_err(|source| PutError::Write { path, source })
        };
        if let Some(key) = &self.key {
            write(self.tag_path(digest), hex::encode(ring::hmac::sign(key, &bytes).as_ref()).as_bytes())?;
        }
        write(self.path(digest), &bytes)
    }

    /// Remove every entry (benchmarks measure cold compiles with this).
    pub fn clear(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "cwasm" || e == "tag") {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

/// Why a compiled component could not be stored (the next load compiles
/// again; nothing else is lost).
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("serialize: {cause}")]
    Serialize { cause: wasmtime::Error },
    #[error("write {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
}
