//! The seven built-in feature components, compiled from `features-wasm/`
//! by this crate's build script and embedded in the binary, so an offline
//! machine or a cluster without a registry has every feature.

include!(concat!(env!("OUT_DIR"), "/modules.rs"));

/// The embedded component of a built-in feature.
pub fn module(id: &str) -> Option<&'static [u8]> {
    MODULES.iter().find(|(name, _)| *name == id).map(|(_, bytes)| *bytes)
}

/// A component built alongside the built-ins but not embedded (the
/// hostile test module), by artifact stem, e.g. `feature_hostile`.
pub fn artifact_path(stem: &str) -> std::path::PathBuf {
    std::path::Path::new(ARTIFACT_DIR).join(format!("{stem}.wasm"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_seven_are_embedded_as_components() {
        let ids: Vec<&str> = super::MODULES.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, ["otel_pipeline", "falco", "tetragon", "osquery", "trivy", "posture", "ctem_validation"]);
        for (id, bytes) in super::MODULES {
            assert_eq!(&bytes[0..4], b"\0asm", "{id}");
            assert_eq!(bytes[4], 0x0d, "{id} must be a component, not a core module");
        }
    }
}
