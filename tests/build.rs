//! Builds every module under `wasm-modules/` for `wasm32-unknown-unknown` (release), the way a
//! module author builds one, so the integration tests can register real modules. The artifacts'
//! directory reaches the tests as `WEIR_MODULES_DIR`, the module names as `WEIR_MODULES`
//! (see `src/modules.rs`).
//!
//! The nested cargo uses its own target directory (`$CARGO_TARGET_DIR/wasm-modules`, else
//! `target/wasm-modules`): it never waits on the outer build's lock, and debug and release test
//! builds share its output.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const TARGET: &str = "wasm32-unknown-unknown";

fn main() -> Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .context("the tests crate lives in the workspace root")?
        .to_path_buf();
    for input in [
        ".cargo/config.toml",
        "sdk/module",
        "sdk/abi",
        "sdk/wit",
        "wasm-modules",
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let modules = module_names(&workspace.join("wasm-modules"))?;
    check_target_installed()?;

    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir).join("wasm-modules"),
        None => workspace.join("target").join("wasm-modules"),
    };
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for module in &modules {
        command.args(["-p", module]);
    }
    // What leaks from the outer build and must not reach this one: flags meant for the host
    // (coverage, `-C target-cpu=native`, `-D warnings`), a target triple, and clippy, which
    // `cargo clippy` installs as the workspace's rustc wrapper with its arguments in CLIPPY_ARGS.
    // The jobserver (CARGO_MAKEFLAGS) is kept on purpose: the nested build then shares the outer
    // build's job slots instead of oversubscribing the machine.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CARGO_INCREMENTAL",
    ] {
        command.env_remove(var);
    }
    // Small, fast, reproducible modules without touching the workspace's release profile: no
    // debug info, symbols stripped (the `component-type` custom section the broker needs is
    // kept), opt-level 2 (the benchmark modules are measured; `s` saves only ~10%).
    for (var, value) in [
        ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
        ("CARGO_PROFILE_RELEASE_STRIP", "true"),
        ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "2"),
        ("CARGO_PROFILE_RELEASE_PANIC", "abort"),
        ("CARGO_PROFILE_RELEASE_LTO", "false"),
        ("CARGO_PROFILE_RELEASE_INCREMENTAL", "false"),
    ] {
        command.env(var, value);
    }
    let status = command
        .status()
        .context("could not run cargo to build the wasm modules")?;
    if !status.success() {
        bail!("building the wasm modules failed ({status}): see the cargo output above");
    }

    let artifacts = target_dir.join(TARGET).join("release");
    for module in &modules {
        let wasm = artifacts.join(format!("{}.wasm", module.replace('-', "_")));
        if !wasm.is_file() {
            bail!("cargo succeeded but {} is missing", wasm.display());
        }
    }
    println!("cargo:rustc-env=WEIR_MODULES_DIR={}", artifacts.display());
    println!(
        "cargo:rustc-env=WEIR_MODULES_TARGET_DIR={}",
        target_dir.display()
    );
    println!("cargo:rustc-env=WEIR_MODULES={}", modules.join(","));
    Ok(())
}

/// The module crates: every directory of `wasm-modules/` with a Cargo.toml, whose package must
/// be named like the directory.
fn module_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let manifest = path.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} is not a UTF-8 name", path.display()))?
            .to_owned();
        let text = fs::read_to_string(&manifest)?;
        if !text
            .lines()
            .any(|line| line.trim() == format!("name = \"{name}\""))
        {
            bail!(
                "{}: the package must be named `{name}` like its directory",
                manifest.display()
            );
        }
        names.push(name);
    }
    names.sort();
    if names.is_empty() {
        bail!("no module crates under {}", dir.display());
    }
    Ok(names)
}

/// Fails with the fix when the wasm target's standard library is not installed.
fn check_target_installed() -> Result<()> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let output = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .context("could not run rustc")?;
    let sysroot = String::from_utf8(output.stdout).context("rustc printed a non-UTF-8 sysroot")?;
    let std_dir = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib");
    if !std_dir.is_dir() {
        bail!(
            "the {TARGET} target is not installed, and the integration tests need it to build the \
             wasm modules: run `rustup target add {TARGET}`"
        );
    }
    Ok(())
}
