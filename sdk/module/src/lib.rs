//! Write Weir modules in plain Rust. A module is a WebAssembly component that the broker runs
//! against every batch of records produced to, or fetched from, a topic it is attached to. This
//! crate hides the component-model contract (the `weir:module` WIT world in sdk/wit), the flat
//! batch and outcome encodings (`weir-abi`) and the module's memory: you write one function over
//! [`Record`]s and export it with one macro per kind of module.
//!
//! | macro | your function | what happens to each input record |
//! | --- | --- | --- |
//! | [`filter!`] | `fn(&Record) -> bool` | kept unchanged if `true`, dropped if `false` |
//! | [`map!`] | `fn(Record) -> Result<Record>` | replaced; an [`Error`] rejects it |
//! | [`filter_map!`] | `fn(Record) -> Result<Option<Record>>` | replaced, dropped on `None`; an error rejects it |
//! | [`flat_map!`] | `fn(Record) -> Result<Vec<Record>>` | replaced by zero or more records; an error rejects it |
//! | [`validate!`] | `fn(&Record) -> Result<(), Reject>` | kept unchanged, or rejected with the [`Reject`]'s reason |
//! | [`aggregate!`] | `fn(State, &Record) -> State` | replaced by itself with the new state as its value ([`ToValue`]) |
//! | [`raw!`] | `fn(&[u8]) -> Result<Vec<u8>>` | whatever the outcome you encode says |
//!
//! A rejected record is reported to the producer with its index and the reason, and on the produce
//! path the attachment's policy decides whether the batch fails, the record is dropped or it goes
//! to a dead-letter topic. Records a module returns keep the offset of the input they derive from.
//!
//! # Building
//!
//! A module is a `cdylib` crate depending on `weir-module`, built with
//!
//! ```text
//! cargo build --release --target wasm32-unknown-unknown
//! ```
//!
//! (no WASI, no extra tools: the broker turns the core module into a component when it is
//! registered) and registered with `weir module register NAME target/wasm32-unknown-unknown/release/NAME.wasm`.
//! `weir module new NAME --kind filter` writes such a crate. A panic in a module is a trap: the
//! call fails and the broker reports it; the broker and the other topics keep running.
//!
//! # Parameters
//!
//! A module is attached (or named by a consumer) with `key=value` [`Params`]. Each export macro
//! takes an optional hook that runs once per instance, before the first batch:
//!
//! - `init = setup` with `fn setup(&Params) -> Result<()>`: checks the parameters (an error refuses
//!   the attachment or fetch with its message); your function can read them through
//!   [`params()`].
//! - `config = Config::new` with `fn new(&Params) -> Result<Config>`: parses them once into a
//!   value of your own type, which your function then receives first:
//!   `fn(&Config, &Record) -> bool` for a filter, and so on for every kind.
//!
//! ```
//! use weir_module::{Params, Record, Result};
//!
//! /// Keeps records whose value is at least `min` bytes long.
//! struct MinLen {
//!     min: usize,
//! }
//!
//! impl MinLen {
//!     fn new(params: &Params) -> Result<Self> {
//!         params.allow_only(&["min"])?;
//!         Ok(MinLen { min: params.require("min")? })
//!     }
//! }
//!
//! fn long_enough(config: &MinLen, record: &Record) -> bool {
//!     record.value.len() >= config.min
//! }
//!
//! weir_module::filter!(long_enough, config = MinLen::new);
//! # let out = weir_module::testing::run::<WeirModule>(&[("min", "2")], vec![Record::new("a"), Record::new("ab")])?;
//! # assert_eq!(out.values(), ["ab"]);
//! # assert_eq!(
//! #     weir_module::testing::run::<WeirModule>(&[], vec![]).unwrap_err().message(),
//! #     "missing required parameter `min`"
//! # );
//! # Ok::<(), weir_module::Error>(())
//! ```
//!
//! # One example per kind
//!
//! A filter with an init hook reading [`params()`]:
//!
//! ```
//! use weir_module::{Params, Record, Result};
//!
//! fn check(params: &Params) -> Result<()> {
//!     params.require::<String>("prefix").map(drop)
//! }
//!
//! fn has_prefix(record: &Record) -> bool {
//!     let prefix = weir_module::params();
//!     let prefix = prefix.get("prefix").unwrap_or_default();
//!     record.value.starts_with(prefix.as_bytes())
//! }
//!
//! weir_module::filter!(has_prefix, init = check);
//! # let out = weir_module::testing::run::<WeirModule>(&[("prefix", "a")], vec![Record::new("ab"), Record::new("ba")])?;
//! # assert_eq!(out.kept(), [0]);
//! # Ok::<(), weir_module::Error>(())
//! ```
//!
//! A map (an error rejects the record with its message):
//!
//! ```
//! use weir_module::{Record, Result};
//!
//! fn shout(record: Record) -> Result<Record> {
//!     let upper = record.value_str()?.to_uppercase();
//!     Ok(record.with_value(upper).with_header("shouted", "yes"))
//! }
//!
//! weir_module::map!(shout);
//! # let out = weir_module::testing::run::<WeirModule>(&[], vec![Record::new("hi"), Record::new(vec![0xff])])?;
//! # assert_eq!(out.values(), ["HI"]);
//! # assert_eq!(out.rejections(), [(1, "the value is not UTF-8: invalid utf-8 sequence of 1 bytes from index 0")]);
//! # Ok::<(), weir_module::Error>(())
//! ```
//!
//! A filter-map (drop with `None`):
//!
//! ```
//! use weir_module::{Record, Result};
//!
//! fn trim_or_drop(record: Record) -> Result<Option<Record>> {
//!     let trimmed = record.value_str()?.trim().to_owned();
//!     Ok((!trimmed.is_empty()).then(|| record.with_value(trimmed)))
//! }
//!
//! weir_module::filter_map!(trim_or_drop);
//! # let out = weir_module::testing::run::<WeirModule>(&[], vec![Record::new(" a "), Record::new("  ")])?;
//! # assert_eq!(out.values(), ["a"]);
//! # Ok::<(), weir_module::Error>(())
//! ```
//!
//! A flat-map (each output record keeps the input's key, headers and offset unless you change them):
//!
//! ```
//! use weir_module::{Record, Result};
//!
//! fn words(record: Record) -> Result<Vec<Record>> {
//!     let text = record.value_str()?;
//!     Ok(text.split_whitespace().map(|w| record.clone().with_value(w)).collect())
//! }
//!
//! weir_module::flat_map!(words);
//! # let out = weir_module::testing::run::<WeirModule>(&[], vec![Record::new("a b"), Record::new("c")])?;
//! # assert_eq!(out.values(), ["a", "b", "c"]);
//! # Ok::<(), weir_module::Error>(())
//! ```
//!
//! A validator (the producer learns which records were rejected and why):
//!
//! ```
//! use weir_module::{Record, Reject};
//!
//! fn has_key(record: &Record) -> Result<(), Reject> {
//!     match &record.key {
//!         Some(key) if !key.is_empty() => Ok(()),
//!         _ => Err(Reject::new("records need a key")),
//!     }
//! }
//!
//! weir_module::validate!(has_key);
//! # let out = weir_module::testing::run::<WeirModule>(&[], vec![Record::new("a").with_key("k"), Record::new("b")])?;
//! # assert_eq!(out.kept(), [0]);
//! # assert_eq!(out.rejections(), [(1, "records need a key")]);
//! # Ok::<(), weir_module::Error>(())
//! ```
//!
//! An aggregate (the state lives as long as the instance, one per subscription, so a consumer
//! sees running results):
//!
//! ```
//! use weir_module::Record;
//!
//! /// Running total of the value lengths; emitted as decimal text.
//! fn total_bytes(total: u64, record: &Record) -> u64 {
//!     total + record.value.len() as u64
//! }
//!
//! weir_module::aggregate!(total_bytes);
//! # let out = weir_module::testing::run::<WeirModule>(&[], vec![Record::new("ab"), Record::new("cde")])?;
//! # assert_eq!(out.values(), ["2", "5"]);
//! # Ok::<(), weir_module::Error>(())
//! ```
//!
//! # Logging
//!
//! [`info!`], [`warn!`], [`error!`] and [`debug!`] write to the broker's log, attributed to the
//! module; the broker bounds how much one call may write.
//!
//! # Testing
//!
//! The export macros also define a `WeirModule` type; [`testing::run`] and [`testing::Instance`]
//! run it natively in a plain `cargo test`, through the same code the wasm export runs:
//!
//! ```
//! use weir_module::{Record, testing};
//!
//! fn non_empty(record: &Record) -> bool {
//!     !record.value.is_empty()
//! }
//! weir_module::filter!(non_empty);
//!
//! let outcome = testing::run::<WeirModule>(&[], vec![Record::new("x"), Record::new("")])?;
//! assert_eq!(outcome.kept(), [0]);
//! # Ok::<(), weir_module::Error>(())
//! ```

// The generated bindings name this crate by its external name (`runtime_path` below).
extern crate self as weir_module;

mod error;
mod glue;
#[cfg(feature = "json")]
pub mod json;
pub mod log;
mod macros;
mod params;
mod record;
pub mod testing;

pub use error::{Error, Reject, Result};
pub use glue::{Module, ToValue};
pub use log::Level;
pub use params::{Params, params};
pub use record::{Header, Record};

/// The bindings `wit-bindgen` generates for the `weir:module` world (sdk/wit).
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "module",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "weir_module::__private::bindings",
        runtime_path: "weir_module::__private::wit_bindgen::rt",
    });
}

/// What the export macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use crate::bindings::exports::weir::module::processor::Guest;
    pub use crate::glue::{Processor, export_init, export_process, make};
    pub use wit_bindgen;
}
