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
use bytes::Bytes;
use weir_proto::v1 as pb;

use crate::RawClient;

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

/// Registers module `name` under its own name, as the next version, and returns that version.
pub async fn register(client: &mut RawClient, name: &str) -> anyhow::Result<u32> {
    let described = client
        .register_module(pb::RegisterModuleRequest {
            name: name.into(),
            version: None,
            wasm: Bytes::from(bytes(name)?),
        })
        .await?
        .into_inner();
    Ok(described
        .versions
        .last()
        .map(|v| v.version)
        .unwrap_or_default())
}

/// A chain stage naming the latest version of module `name`, with `init` parameters `params`.
pub fn module_ref(name: &str, params: &[(&str, &str)]) -> pb::ModuleRef {
    pb::ModuleRef {
        name: name.into(),
        version: None,
        params: params
            .iter()
            .map(|(k, v)| pb::ModuleParam {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
    }
}
