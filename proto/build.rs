//! Compiles `weir/**/*.proto` with protox (pure Rust, so no system `protoc` is needed), writes the
//! encoded descriptor set to `$OUT_DIR/weir_descriptor.bin` for gRPC server reflection, and
//! generates prost messages plus tonic clients and servers from it.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Directory under the manifest holding the `.proto` files; it is also the first component of
/// their import paths (`weir/v1/broker.proto`), which must match the package (`weir.v1`).
const PROTO_ROOT: &str = "weir";

/// Name the descriptor set is written under; `tonic::include_file_descriptor_set!` appends `.bin`.
const DESCRIPTOR_FILE: &str = "weir_descriptor.bin";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").context("cargo sets CARGO_MANIFEST_DIR")?,
    );
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("cargo sets OUT_DIR")?);
    let proto_root = manifest_dir.join(PROTO_ROOT);

    // A directory is scanned recursively by cargo, so added or edited protos rerun this script.
    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut protos = Vec::new();
    collect_protos(&proto_root, &mut protos)?;
    // Sorted so that the descriptor set, and therefore the build output, is reproducible.
    protos.sort();
    anyhow::ensure!(
        !protos.is_empty(),
        "no .proto files under {}",
        proto_root.display()
    );

    let mut compiler = protox::Compiler::new([&manifest_dir])?;
    // Source info carries the proto comments: prost turns them into rustdoc, and reflection
    // clients (grpcurl describe) show them.
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(&protos)?;

    let descriptor_path = out_dir.join(DESCRIPTOR_FILE);
    std::fs::write(&descriptor_path, compiler.encode_file_descriptor_set())
        .with_context(|| format!("writing {}", descriptor_path.display()))?;

    tonic_prost_build::configure()
        // `bytes` fields as `bytes::Bytes`: requests decode without copying payloads, and the
        // broker serves record data without a copy into a `Vec`.
        .bytes(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())
        .context("generating Rust code from the descriptor set")?;
    Ok(())
}

/// Appends every `.proto` file under `dir`, recursively, to `out`.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
