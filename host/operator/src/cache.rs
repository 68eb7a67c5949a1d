//! A size bound for the operator's on-disk module cache (fetched
//! components, cached resolutions and precompiled modules, all under one
//! directory). Without one, agents naming many module digests would fill
//! the cache volume, and the kubelet evicts a pod whose emptyDir outgrows
//! its `sizeLimit`: one tenant could take the shared operator down.
//!
//! Oldest files go first (by modification time); an evicted module is
//! fetched and compiled again when it is needed, so eviction only costs
//! time. Markers of unfinished compiles (`compiling/`) are never evicted:
//! they are what refuses a module that kills the operator while compiling.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Every regular file under `dir`, with its size and modification time.
fn files(dir: &Path, out: &mut Vec<(PathBuf, u64, SystemTime)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            if path.file_name().is_some_and(|n| n == "compiling") {
                continue;
            }
            files(&path, out);
        } else if meta.is_file() {
            out.push((path, meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        }
    }
}

/// Delete the oldest files under `dir` until it holds at most `max_bytes`.
/// Returns the bytes freed.
pub fn trim(dir: &Path, max_bytes: u64) -> u64 {
    let mut all = vec![];
    files(dir, &mut all);
    let mut total: u64 = all.iter().map(|(_, size, _)| size).sum();
    if total <= max_bytes {
        return 0;
    }
    all.sort_by_key(|(_, _, modified)| *modified);
    let mut freed = 0;
    for (path, size, _) in all {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= size;
            freed += size;
        }
    }
    if freed > 0 {
        tracing::info!(dir = %dir.display(), freed, kept = total, "module cache trimmed to its size bound");
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_files_go_first_and_compile_markers_stay() {
        let dir = std::env::temp_dir().join(format!("secop-cache-trim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["oci/blobs", "oci/compiling"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let write = |path: &str, bytes: usize, age_secs: u64| {
            let path = dir.join(path);
            std::fs::write(&path, vec![0u8; bytes]).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() - std::time::Duration::from_secs(age_secs)).unwrap();
        };
        write("old.cwasm", 400, 300);
        write("oci/blobs/middle.wasm", 400, 200);
        write("new.cwasm", 400, 100);
        write("oci/compiling/abc", 10, 1000);
        assert_eq!(trim(&dir, 2000), 0, "within the bound nothing goes");
        assert_eq!(trim(&dir, 900), 400);
        assert!(
            !dir.join("old.cwasm").exists()
                && dir.join("oci/blobs/middle.wasm").exists()
                && dir.join("new.cwasm").exists()
        );
        assert!(dir.join("oci/compiling/abc").exists(), "a compile marker is never evicted");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
