//! The wasm modules of `wasm-modules/`, built for `wasm32-unknown-unknown` by this crate's build
//! script before any test runs: core modules carrying their `component-type` section, exactly
//! what `weir module register` accepts.
//!
//! ```no_run
//! let bytes = weir_tests::modules::bytes("field-filter")?;
//! assert!(bytes.starts_with(b"\0asm"));
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Directory holding the built `.wasm` files.
pub fn dir() -> &'static Path {
    Path::new(env!("WEIR_MODULES_DIR"))
}

/// Cargo target directory of the module build: point `CARGO_TARGET_DIR` at it to build another
/// module crate (a scaffolded one, say) against already compiled dependencies.
pub fn target_dir() -> &'static Path {
    Path::new(env!("WEIR_MODULES_TARGET_DIR"))
}

/// Names of the modules built (their crate names: `field-filter`, `hostile`, …).
pub fn names() -> Vec<&'static str> {
    env!("WEIR_MODULES").split(',').collect()
}

/// Path of module `name`'s `.wasm` file. Panics, listing the modules, if there is no such module.
pub fn path(name: &str) -> PathBuf {
    assert!(
        names().contains(&name),
        "no wasm module `{name}`; the modules are: {}",
        names().join(", ")
    );
    dir().join(format!("{}.wasm", name.replace('-', "_")))
}

/// Bytes of module `name`'s `.wasm` file; an error naming the modules if there is no such module.
pub fn bytes(name: &str) -> anyhow::Result<Vec<u8>> {
    if !names().contains(&name) {
        anyhow::bail!(
            "no wasm module `{name}`; the modules are: {}",
            names().join(", ")
        );
    }
    let path = path(name);
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}
