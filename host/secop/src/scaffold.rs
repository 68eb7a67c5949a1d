//! `secop feature new NAME --lang rust|python`: a feature module's project,
//! against the operator's contract (`wit/feature.wit`, copied in), that
//! builds with one command outside this repository and keeps the rules of
//! `secop feature test --conformance`. The templates are the files under
//! host/secop/scaffold/, with `{{...}}` placeholders.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// The contract, as the operator was built with it.
const WIT: &str = include_str!("../../../wit/feature.wit");
/// The wit-bindgen release the built-in features use (workspace Cargo.toml).
pub const WIT_BINDGEN: &str = "0.61";
/// The componentize-py release the Python sample is built with
/// (xtask/src/pyfeature.rs).
pub const COMPONENTIZE_PY: &str = "0.25.1";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
}

/// (path in the project, template) per language.
fn templates(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[
            ("Cargo.toml", include_str!("../scaffold/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("../scaffold/rust/src/lib.rs")),
            ("README.md", include_str!("../scaffold/rust/README.md")),
        ],
        Lang::Python => &[
            ("app.py", include_str!("../scaffold/python/app.py")),
            ("README.md", include_str!("../scaffold/python/README.md")),
        ],
    }
}

/// A feature id as SecurityAgents name features: lower case, digits and
/// `_`, starting with a letter.
fn check_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let starts = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') || id.len() > 40 {
        bail!("feature name `{id}`: use lower-case letters, digits and `_`, starting with a letter (at most 40)");
    }
    Ok(())
}

/// `my_tool` → `MyToolReady`.
fn condition_type(id: &str) -> String {
    let camel: String =
        id.split('_').filter(|p| !p.is_empty()).map(|p| p[..1].to_ascii_uppercase() + &p[1..]).collect();
    format!("{camel}Ready")
}

fn fill(template: &str, id: &str) -> String {
    template
        .replace("{{id}}", id)
        .replace("{{name}}", &id.replace('_', "-"))
        .replace("{{crate}}", id)
        .replace("{{condition}}", &condition_type(id))
        .replace("{{contract}}", secop_feature_sdk::model::CONTRACT_VERSION)
        .replace("{{wit_bindgen}}", WIT_BINDGEN)
        .replace("{{componentize_py}}", COMPONENTIZE_PY)
}

/// Write the project for feature `id` into `dir` (default `./<id>`),
/// which must not exist or be empty. Returns the directory and the files.
pub fn create(id: &str, lang: Lang, dir: Option<&Path>) -> Result<(PathBuf, Vec<PathBuf>)> {
    check_id(id)?;
    let dir = dir.map_or_else(|| PathBuf::from(id), Path::to_path_buf);
    if dir.exists() && std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?.next().is_some() {
        bail!("{} exists and is not empty: nothing written", dir.display());
    }
    let mut files: Vec<(PathBuf, String)> =
        templates(lang).iter().map(|(path, template)| (dir.join(path), fill(template, id))).collect();
    files.push((dir.join("wit/feature.wit"), WIT.to_string()));
    for (path, text) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((dir, files.into_iter().map(|(p, _)| p).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_filled_in() {
        assert!(check_id("my_tool2").is_ok());
        for bad in ["", "MyTool", "2tool", "my-tool", "a/b"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        assert_eq!(condition_type("my_tool"), "MyToolReady");
        let cargo = fill(templates(Lang::Rust)[0].1, "my_tool");
        assert!(cargo.contains("name = \"feature-my-tool\""), "{cargo}");
        assert!(!cargo.contains("{{"), "{cargo}");
        for lang in [Lang::Rust, Lang::Python] {
            for (path, template) in templates(lang) {
                assert!(!fill(template, "my_tool").contains("{{"), "{path}: a placeholder left");
            }
        }
    }

    /// The versions the scaffold names are those this repository builds with.
    #[test]
    fn pinned_versions_match_the_repository() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(workspace.contains(&format!("wit-bindgen = {{ version = \"{WIT_BINDGEN}\"")), "wit-bindgen");
        let xtask = std::fs::read_to_string(root.join("xtask/src/pyfeature.rs")).unwrap();
        assert!(xtask.contains(&format!("COMPONENTIZE_PY: &str = \"{COMPONENTIZE_PY}\"")), "componentize-py");
    }
}
