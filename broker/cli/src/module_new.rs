//! `weir module new NAME --kind KIND`: writes a module crate ready to build for
//! `wasm32-unknown-unknown`, with a working example of the kind, a unit test running it through
//! the SDK's test harness, and a README with the build and register commands.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};

/// The kinds of module the SDK exports, one `weir_module` macro each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModuleKind {
    /// Keeps or drops each record: `fn(&Record) -> bool`.
    Filter,
    /// Rewrites each record: `fn(Record) -> Result<Record>`.
    Map,
    /// Rewrites or drops each record: `fn(Record) -> Result<Option<Record>>`.
    FilterMap,
    /// Turns each record into zero or more: `fn(Record) -> Result<Vec<Record>>`.
    FlatMap,
    /// Accepts or rejects each record with a reason: `fn(&Record) -> Result<(), Reject>`.
    Validate,
    /// Folds records into a running state: `fn(State, &Record) -> State`.
    Aggregate,
}

impl ModuleKind {
    /// Every kind, in the order of the help text.
    pub const ALL: [ModuleKind; 6] = [
        ModuleKind::Filter,
        ModuleKind::Map,
        ModuleKind::FilterMap,
        ModuleKind::FlatMap,
        ModuleKind::Validate,
        ModuleKind::Aggregate,
    ];

    /// The name used on the command line (`filter-map`).
    pub fn name(self) -> &'static str {
        match self {
            ModuleKind::Filter => "filter",
            ModuleKind::Map => "map",
            ModuleKind::FilterMap => "filter-map",
            ModuleKind::FlatMap => "flat-map",
            ModuleKind::Validate => "validate",
            ModuleKind::Aggregate => "aggregate",
        }
    }
}

impl fmt::Display for ModuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a module kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown module kind `{}` (expected filter, map, filter-map, flat-map, validate or \
             aggregate)",
            self.0
        )
    }
}

impl std::error::Error for UnknownKind {}

impl FromStr for ModuleKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        ModuleKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// Where the new crate gets the `weir-module` SDK from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A local checkout of the SDK crate (`sdk/module` of the Weir repository).
    Path(PathBuf),
    /// A version requirement on the published crate.
    Version(String),
}

impl SdkSource {
    /// The SDK this `weir` was built from, if its source is still where it was built (a
    /// development checkout); otherwise the published SDK of the same version.
    pub fn for_this_build() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/module");
        match path.canonicalize() {
            Ok(path) if path.join("Cargo.toml").is_file() => SdkSource::Path(path),
            _ => SdkSource::Version(env!("CARGO_PKG_VERSION").to_owned()),
        }
    }

    fn dependency(&self) -> String {
        match self {
            // A TOML literal string: no escapes, so any path without a `'` is written as is.
            SdkSource::Path(path) => format!("{{ path = '{}' }}", path.display()),
            SdkSource::Version(version) => format!("\"{version}\""),
        }
    }

    /// The lock file of the workspace the SDK lives in, if it is a checkout: the new crate starts
    /// from the dependency versions the SDK was tested with (cargo drops the entries it does not
    /// need).
    fn workspace_lock(&self) -> Option<PathBuf> {
        match self {
            SdkSource::Path(path) => Some(path.join("../../Cargo.lock")).filter(|p| p.is_file()),
            SdkSource::Version(_) => None,
        }
    }
}

/// Creates the module crate `name` of `kind` in `dir`, which must not exist or be empty:
/// Cargo.toml (a `cdylib` with its own `[workspace]`, so it builds on its own), src/lib.rs (a
/// working example and its unit test), .cargo/config.toml (WebAssembly SIMD on), README.md,
/// .gitignore.
pub fn scaffold(dir: &Path, name: &str, kind: ModuleKind, sdk: SdkSource) -> anyhow::Result<()> {
    check_name(name)?;
    if let SdkSource::Path(path) = &sdk
        && path.to_string_lossy().contains('\'')
    {
        bail!("the SDK path {} contains a `'`", path.display());
    }
    if dir.exists() {
        let mut entries =
            fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            bail!("{} already exists and is not empty", dir.display());
        }
    }
    for sub in ["src", ".cargo"] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }

    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        ("src/lib.rs", lib_rs(name, kind)),
        (".cargo/config.toml", CARGO_CONFIG.to_owned()),
        ("README.md", readme(name, kind)),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (file, contents) in files {
        let path = dir.join(file);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(lock) = sdk.workspace_lock() {
        let to = dir.join("Cargo.lock");
        fs::copy(&lock, &to)
            .with_context(|| format!("copying {} to {}", lock.display(), to.display()))?;
    }
    Ok(())
}

/// A Cargo package name: ASCII letters, digits, `-` and `_`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{name}` is not a valid module name: use ASCII letters, digits, `-` and `_`, \
             starting with a letter"
        );
    }
    Ok(())
}

/// The file `cargo build` writes: the crate name with `-` replaced by `_`.
fn wasm_file(name: &str) -> String {
    format!(
        "target/wasm32-unknown-unknown/release/{}.wasm",
        name.replace('-', "_")
    )
}

/// Builds for WebAssembly with 128-bit SIMD, as the project's own modules are (the workspace's
/// .cargo/config.toml).
const CARGO_CONFIG: &str = r#"# WebAssembly 128-bit SIMD: byte searches (memchr), UTF-8 and JSON checks run several times
# faster. Every Weir broker runs SIMD modules.
[target.wasm32-unknown-unknown]
rustflags = ["-C", "target-feature=+simd128"]
"#;

fn cargo_toml(name: &str, sdk: &SdkSource) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A cdylib is what `cargo build --target wasm32-unknown-unknown` turns into a .wasm file.
crate-type = ["cdylib"]

[dependencies]
weir-module = {dependency}

# Small modules: the broker stores and ships them. Panics abort (a trap the broker reports).
[profile.release]
debug = false
strip = true
opt-level = 2
panic = "abort"

# Not part of any enclosing workspace.
[workspace]
"#,
        dependency = sdk.dependency()
    )
}

fn readme(name: &str, kind: ModuleKind) -> String {
    format!(
        r#"# {name}

A Weir {kind} module (see `src/lib.rs` for what it does and its parameters), written with the
`weir-module` SDK.

Build it (the target is installed with `rustup target add wasm32-unknown-unknown`):

```sh
cargo build --release --target wasm32-unknown-unknown
```

Register it with the broker:

```sh
weir module register {name} {wasm}
```

Run its tests natively, through the same glue the broker calls:

```sh
cargo test
```
"#,
        wasm = wasm_file(name)
    )
}

fn lib_rs(name: &str, kind: ModuleKind) -> String {
    let body = match kind {
        ModuleKind::Filter => FILTER,
        ModuleKind::Map => MAP,
        ModuleKind::FilterMap => FILTER_MAP,
        ModuleKind::FlatMap => FLAT_MAP,
        ModuleKind::Validate => VALIDATE,
        ModuleKind::Aggregate => AGGREGATE,
    };
    body.replace("{{name}}", name)
}

const FILTER: &str = r##"//! `{{name}}`: a Weir filter module. Keeps the records whose value contains a needle.
//!
//! Parameters: `needle` (required), the text to look for.

use weir_module::{Params, Record, Result};

/// The module's configuration, read from its parameters once per instance.
pub struct Config {
    needle: Vec<u8>,
}

impl Config {
    /// Reads the parameters; an error refuses them (the attach or consume request fails).
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["needle"])?;
        let needle: String = params.require("needle")?;
        weir_module::info!("keeping records containing {needle:?}");
        Ok(Config {
            needle: needle.into_bytes(),
        })
    }
}

/// Keeps `record` if its value contains the needle.
pub fn keep(config: &Config, record: &Record) -> bool {
    config.needle.is_empty()
        || record
            .value
            .windows(config.needle.len())
            .any(|window| window == config.needle)
}

weir_module::filter!(keep, config = Config::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    #[test]
    fn keeps_records_containing_the_needle() {
        let records = vec![Record::new("an error"), Record::new("all good")];
        let outcome = testing::run::<WeirModule>(&[("needle", "error")], records).unwrap();
        assert_eq!(outcome.kept(), [0]);
    }

    #[test]
    fn the_needle_is_required() {
        let error = testing::run::<WeirModule>(&[], vec![]).unwrap_err();
        assert_eq!(error.message(), "missing required parameter `needle`");
    }
}
"##;

const MAP: &str = r##"//! `{{name}}`: a Weir map module. Prepends a prefix to each value and marks the record with a
//! header. Values must be UTF-8; others are rejected.
//!
//! Parameters: `prefix` (default empty).

use weir_module::{Params, Record, Result};

/// The module's configuration, read from its parameters once per instance.
pub struct Config {
    prefix: String,
}

impl Config {
    /// Reads the parameters; an error refuses them (the attach or consume request fails).
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["prefix"])?;
        Ok(Config {
            prefix: params.parse_or("prefix", String::new())?,
        })
    }
}

/// Returns `record` with the prefix before its value; an error rejects the record.
pub fn prefix(config: &Config, record: Record) -> Result<Record> {
    let value = format!("{}{}", config.prefix, record.value_str()?);
    Ok(record.with_value(value).with_header("mapped-by", "{{name}}"))
}

weir_module::map!(prefix, config = Config::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    #[test]
    fn prefixes_values_and_rejects_binary_ones() {
        let records = vec![Record::new("world"), Record::new(vec![0xff])];
        let outcome = testing::run::<WeirModule>(&[("prefix", "hello ")], records).unwrap();
        assert_eq!(outcome.values(), ["hello world"]);
        let header = outcome.records()[0].header("mapped-by");
        assert_eq!(header, Some("{{name}}".as_bytes()));
        assert_eq!(outcome.rejections().len(), 1);
        assert_eq!(outcome.rejections()[0].0, 1);
    }
}
"##;

const FILTER_MAP: &str = r##"//! `{{name}}`: a Weir filter-map module. Reads each value as a number: drops the ones below a
//! minimum, rewrites the others in canonical form (` 42 ` becomes `42`) and rejects values that
//! are not numbers.
//!
//! Parameters: `min` (default 0).

use weir_module::{Error, Params, Record, Result};

/// The module's configuration, read from its parameters once per instance.
pub struct Config {
    min: f64,
}

impl Config {
    /// Reads the parameters; an error refuses them (the attach or consume request fails).
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["min"])?;
        Ok(Config {
            min: params.parse_or("min", 0.0)?,
        })
    }
}

/// `None` drops the record; an error rejects it.
pub fn at_least(config: &Config, record: Record) -> Result<Option<Record>> {
    let text = record.value_str()?.trim();
    let number: f64 = text
        .parse()
        .map_err(|_| Error::new(format!("`{text}` is not a number")))?;
    if number < config.min {
        return Ok(None);
    }
    Ok(Some(record.with_value(number.to_string())))
}

weir_module::filter_map!(at_least, config = Config::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    #[test]
    fn drops_small_numbers_and_rejects_text() {
        let records = vec![Record::new(" 42 "), Record::new("3"), Record::new("lots")];
        let outcome = testing::run::<WeirModule>(&[("min", "10")], records).unwrap();
        assert_eq!(outcome.values(), ["42"]);
        assert_eq!(outcome.rejections(), [(2, "`lots` is not a number")]);
    }
}
"##;

const FLAT_MAP: &str = r##"//! `{{name}}`: a Weir flat-map module. Splits each value on a separator into one record per
//! non-empty part; each part keeps the input's key and headers.
//!
//! Parameters: `separator` (default `,`).

use weir_module::{Error, Params, Record, Result};

/// The module's configuration, read from its parameters once per instance.
pub struct Config {
    separator: String,
}

impl Config {
    /// Reads the parameters; an error refuses them (the attach or consume request fails).
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["separator"])?;
        let separator = params.parse_or("separator", ",".to_owned())?;
        if separator.is_empty() {
            return Err(Error::new("parameter `separator` must not be empty"));
        }
        Ok(Config { separator })
    }
}

/// One record per non-empty part of the value; an error rejects the record.
pub fn split(config: &Config, record: Record) -> Result<Vec<Record>> {
    let parts: Vec<String> = record
        .value_str()?
        .split(config.separator.as_str())
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(parts
        .into_iter()
        .map(|part| record.clone().with_value(part))
        .collect())
}

weir_module::flat_map!(split, config = Config::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    #[test]
    fn one_record_per_part() {
        let records = vec![Record::new("a,b,,c").with_key("k"), Record::new("")];
        let outcome = testing::run::<WeirModule>(&[], records).unwrap();
        assert_eq!(outcome.values(), ["a", "b", "c"]);
        let keys: Vec<_> = outcome.records().iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, vec![Some(b"k".to_vec()); 3]);
    }
}
"##;

const VALIDATE: &str = r##"//! `{{name}}`: a Weir validator module. Rejects records without a key and records whose value
//! is larger than a limit; the producer learns which records were rejected and why.
//!
//! Parameters: `max_bytes` (default 1048576).

use weir_module::{Params, Record, Reject, Result};

/// The module's configuration, read from its parameters once per instance.
pub struct Config {
    max_bytes: usize,
}

impl Config {
    /// Reads the parameters; an error refuses them (the attach or consume request fails).
    pub fn from_params(params: &Params) -> Result<Self> {
        params.allow_only(&["max_bytes"])?;
        Ok(Config {
            max_bytes: params.parse_or("max_bytes", 1 << 20)?,
        })
    }
}

/// Accepts `record`, or rejects it with a reason.
pub fn check(config: &Config, record: &Record) -> Result<(), Reject> {
    if record.key.as_ref().is_none_or(|key| key.is_empty()) {
        return Err(Reject::new("records need a key"));
    }
    if record.value.len() > config.max_bytes {
        return Err(Reject::new(format!(
            "the value has {} bytes, more than the {} allowed",
            record.value.len(),
            config.max_bytes
        )));
    }
    Ok(())
}

weir_module::validate!(check, config = Config::from_params);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    #[test]
    fn rejects_with_a_reason() {
        let records = vec![
            Record::new("ok").with_key("k"),
            Record::new("no key"),
            Record::new("too long").with_key("k"),
        ];
        let outcome = testing::run::<WeirModule>(&[("max_bytes", "4")], records).unwrap();
        assert_eq!(outcome.kept(), [0]);
        assert_eq!(
            outcome.rejections(),
            [
                (1, "records need a key"),
                (2, "the value has 8 bytes, more than the 4 allowed")
            ]
        );
    }
}
"##;

const AGGREGATE: &str = r##"//! `{{name}}`: a Weir aggregate module. Counts the records and their bytes; each record comes
//! out with the running totals as its value, `{"count":N,"bytes":B}`. The totals live as long as
//! the module instance (one per subscription).
//!
//! No parameters.

use weir_module::{Params, Record, Result, ToValue};

/// The running totals.
#[derive(Debug, Default)]
pub struct Totals {
    count: u64,
    bytes: u64,
}

impl ToValue for Totals {
    fn to_value(&self) -> Vec<u8> {
        format!(r#"{{"count":{},"bytes":{}}}"#, self.count, self.bytes).into_bytes()
    }
}

/// Refuses any parameter.
pub fn init(params: &Params) -> Result<()> {
    params.allow_only(&[])
}

/// Adds `record` to the totals.
pub fn add(mut totals: Totals, record: &Record) -> Totals {
    totals.count += 1;
    totals.bytes += record.value.len() as u64;
    totals
}

weir_module::aggregate!(add, init = init);

#[cfg(test)]
mod tests {
    use weir_module::{Record, testing};

    use super::WeirModule;

    #[test]
    fn totals_run_across_batches() {
        let mut instance = testing::Instance::new::<WeirModule>(&[]).unwrap();
        let first = instance
            .process(vec![Record::new("ab"), Record::new("c")])
            .unwrap();
        assert_eq!(
            first.values(),
            [r#"{"count":1,"bytes":2}"#, r#"{"count":2,"bytes":3}"#]
        );
        let second = instance.process(vec![Record::new("")]).unwrap();
        assert_eq!(second.values(), [r#"{"count":3,"bytes":3}"#]);
    }
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_display_alike() {
        for kind in ModuleKind::ALL {
            assert_eq!(kind.to_string().parse::<ModuleKind>(), Ok(kind));
            let value = clap::ValueEnum::to_possible_value(&kind).expect("no kind is skipped");
            assert_eq!(value.get_name(), kind.name());
        }
        assert!("filtermap".parse::<ModuleKind>().is_err());
    }

    #[test]
    fn writes_a_crate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("my-filter");
        let sdk = SdkSource::Version("0.1".into());
        scaffold(&root, "my-filter", ModuleKind::Filter, sdk.clone()).expect("scaffold");
        let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
        assert!(manifest.contains("name = \"my-filter\""));
        assert!(manifest.contains("weir-module = \"0.1\""));
        assert!(manifest.contains("crate-type = [\"cdylib\"]"));
        let config = fs::read_to_string(root.join(".cargo/config.toml")).expect("config");
        assert!(config.contains("target-feature=+simd128"));
        let lib = fs::read_to_string(root.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.starts_with("//! `my-filter`: a Weir filter module."));
        assert!(lib.contains("weir_module::filter!(keep, config = Config::from_params);"));
        let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
        assert!(readme.contains(
            "weir module register my-filter \
             target/wasm32-unknown-unknown/release/my_filter.wasm"
        ));

        let again = scaffold(&root, "my-filter", ModuleKind::Map, sdk.clone());
        assert!(again.is_err(), "refuses a non-empty directory");
        let bad = scaffold(&dir.path().join("x"), "9lives", ModuleKind::Map, sdk);
        assert!(bad.is_err(), "refuses an invalid name");
    }

    #[test]
    fn this_build_uses_its_own_sdk() {
        match SdkSource::for_this_build() {
            SdkSource::Path(path) => assert!(path.join("src/lib.rs").is_file()),
            SdkSource::Version(v) => panic!("expected the checkout's SDK, got version {v}"),
        }
    }
}
