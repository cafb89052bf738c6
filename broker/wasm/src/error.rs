//! The two errors of this crate: [`WasmError`] when module bytes cannot become a runnable module
//! (registration), [`ModuleError`] when a module misbehaves while it runs.

use std::path::PathBuf;
use std::time::Duration;

use weir_abi::AbiError;

use crate::limits::human_bytes;
use crate::module::ModuleId;

/// An error from a library this crate calls (wasmtime, wit-component, wasmparser).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a runtime could not start, or why module bytes were refused by [`Runtime::load`].
///
/// [`Runtime::load`]: crate::Runtime::load
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The module is larger than [`WasmLimits::max_module_bytes`](crate::WasmLimits).
    #[error("module is {size} bytes, over the limit of {}", human_bytes(*limit))]
    TooLarge {
        /// Size of the bytes offered.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not WebAssembly at all.
    #[error(
        "not a WebAssembly module or component (build it with `cargo build --target wasm32-unknown-unknown`)"
    )]
    NotWasm,
    /// The bytes look like WebAssembly but do not decode, validate or componentize.
    #[error("invalid WebAssembly module")]
    Invalid {
        /// What the decoder or validator found.
        #[source]
        source: BoxError,
    },
    /// The module imports something other than the Weir host interface (WASI, `env`, ...).
    #[error(
        "module imports `{name}`; a Weir module may import only `log` from weir:module/host@1.0.0 (no WASI, no `env`)"
    )]
    ForbiddenImport {
        /// The import, as `module.name` for a core module or the interface name for a
        /// component.
        name: String,
    },
    /// The module does not export what Weir calls.
    #[error(
        "module does not export `{name}`; a Weir module exports weir:module/processor@1.0.0 (build it with the weir-module SDK or wit-bindgen against sdk/wit)"
    )]
    MissingExport {
        /// What is missing.
        name: String,
    },
    /// An export or import of the Weir world has the wrong type (another version of the WIT?).
    #[error("`{name}` has type `{found}`; weir:module@1.0.0 expects `{expected}`")]
    WrongType {
        /// The function.
        name: String,
        /// Its type in the module.
        found: String,
        /// Its type in the world.
        expected: String,
    },
    /// The module validated but could not be compiled.
    #[error("module failed to compile")]
    Compile {
        /// The compiler's error.
        #[source]
        source: BoxError,
    },
    /// The module compiled but cannot be instantiated in the sandbox (for example its initial
    /// memory is larger than the memory limit, or its start function traps).
    #[error("module cannot be instantiated")]
    Instantiate {
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The compiled-module cache directory cannot be used.
    #[error("module cache directory {}", path.display())]
    Cache {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The limits cannot be used.
    #[error("invalid module limits: {reason}")]
    InvalidLimits {
        /// What is wrong with them.
        reason: String,
    },
    /// The wasm engine could not be created (for example, its memory pool could not be reserved).
    #[error("cannot create the WebAssembly engine")]
    Engine {
        /// wasmtime's error.
        #[source]
        source: BoxError,
    },
}

/// How a module failed while it ran: what a producer or consumer sees.
///
/// Every variant names the module (`name@version`) and, for a limit, the limit. The `Display`
/// text is complete on its own (it is what goes back to clients), so variants carry the module's
/// message or the trap's description as text rather than as a source error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// `init` returned an error: the parameters are refused. Callers report this as an invalid
    /// argument of the attach or fetch, not as a module failure.
    #[error("module '{module}' refused its parameters: {message}")]
    InvalidParams {
        /// The module.
        module: ModuleId,
        /// The module's explanation.
        message: String,
    },
    /// A call ran past the wall-clock limit.
    #[error("module '{module}' exceeded its {} ms time limit per call", limit.as_millis())]
    Timeout {
        /// The module.
        module: ModuleId,
        /// The limit.
        limit: Duration,
    },
    /// The instance tried to grow its memory past the limit.
    #[error("module '{module}' exceeded its memory limit of {}", human_bytes(*limit))]
    OutOfMemory {
        /// The module.
        module: ModuleId,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A call burnt all its fuel.
    #[error("module '{module}' used up its fuel limit of {limit} units per call")]
    FuelExhausted {
        /// The module.
        module: ModuleId,
        /// Fuel per call.
        limit: u64,
    },
    /// The module overflowed its call stack (usually runaway recursion).
    #[error("module '{module}' overflowed its call stack (recursion too deep)")]
    StackOverflow {
        /// The module.
        module: ModuleId,
    },
    /// The module trapped (a panic, `unreachable`, an out-of-bounds access, ...) or broke the
    /// canonical ABI.
    #[error("module '{module}' trapped: {message}")]
    Trap {
        /// The module.
        module: ModuleId,
        /// The trap's description.
        message: String,
    },
    /// `process` returned an error for the whole batch.
    #[error("module '{module}' failed: {message}")]
    Failed {
        /// The module.
        module: ModuleId,
        /// The module's explanation.
        message: String,
    },
    /// `process` returned an outcome that does not decode or does not match its batch.
    #[error("module '{module}' returned a malformed outcome: {error}")]
    BadOutput {
        /// The module.
        module: ModuleId,
        /// What is wrong with it.
        error: AbiError,
    },
    /// `process` returned more bytes than allowed.
    #[error("module '{module}' returned {size} bytes, over its output limit of {}", human_bytes(*limit))]
    OutputTooLarge {
        /// The module.
        module: ModuleId,
        /// Bytes returned.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Every instance slot of the node's pool is in use.
    #[error("module '{module}' cannot start: all {limit} module instances of this node are in use")]
    PoolExhausted {
        /// The module.
        module: ModuleId,
        /// The pool size.
        limit: u32,
    },
    /// The instance failed earlier and cannot be called again; instantiate a new one.
    #[error("module '{module}' cannot be called again after an earlier failure")]
    Unusable {
        /// The module.
        module: ModuleId,
    },
    /// The host could not set up or call the instance for a reason that is not the module's
    /// behaviour.
    #[error("module '{module}' could not run: {message}")]
    Host {
        /// The module.
        module: ModuleId,
        /// What went wrong.
        message: String,
    },
}

impl ModuleError {
    /// The module that failed.
    pub fn module(&self) -> &ModuleId {
        match self {
            ModuleError::InvalidParams { module, .. }
            | ModuleError::Timeout { module, .. }
            | ModuleError::OutOfMemory { module, .. }
            | ModuleError::FuelExhausted { module, .. }
            | ModuleError::StackOverflow { module }
            | ModuleError::Trap { module, .. }
            | ModuleError::Failed { module, .. }
            | ModuleError::BadOutput { module, .. }
            | ModuleError::OutputTooLarge { module, .. }
            | ModuleError::PoolExhausted { module, .. }
            | ModuleError::Unusable { module }
            | ModuleError::Host { module, .. } => module,
        }
    }

    /// Whether `init` refused its parameters (an invalid argument, not a module failure).
    pub fn is_invalid_params(&self) -> bool {
        matches!(self, ModuleError::InvalidParams { .. })
    }

    /// Whether the node ran out of instance slots: a transient condition worth retrying, not
    /// the module's fault.
    pub fn is_pool_exhausted(&self) -> bool {
        matches!(self, ModuleError::PoolExhausted { .. })
    }
}

/// An error and its sources on one line, joined with ": ".
pub(crate) fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        // wasmtime and anyhow contexts sometimes repeat their cause's text.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ModuleId {
        ModuleId {
            name: "hostile".into(),
            version: 1,
        }
    }

    #[test]
    fn module_errors_name_the_module_and_the_limit() {
        let e = ModuleError::Timeout {
            module: id(),
            limit: Duration::from_secs(1),
        };
        assert_eq!(
            e.to_string(),
            "module 'hostile@1' exceeded its 1000 ms time limit per call"
        );
        let e = ModuleError::OutOfMemory {
            module: id(),
            limit: 64 << 20,
        };
        assert_eq!(
            e.to_string(),
            "module 'hostile@1' exceeded its memory limit of 64 MiB"
        );
        let e = ModuleError::OutputTooLarge {
            module: id(),
            size: 20 << 20,
            limit: 16 << 20,
        };
        assert_eq!(
            e.to_string(),
            "module 'hostile@1' returned 20971520 bytes, over its output limit of 16 MiB"
        );
        let e = ModuleError::BadOutput {
            module: id(),
            error: AbiError::Truncated { at: 4 },
        };
        assert_eq!(
            e.to_string(),
            "module 'hostile@1' returned a malformed outcome: buffer ends inside the field at byte 4"
        );
        assert_eq!(e.module(), &id());
        assert!(!e.is_invalid_params());
        let e = ModuleError::InvalidParams {
            module: id(),
            message: "unknown parameter `x`".into(),
        };
        assert!(e.is_invalid_params());
        assert_eq!(
            e.to_string(),
            "module 'hostile@1' refused its parameters: unknown parameter `x`"
        );
    }

    #[test]
    fn chain_text_joins_causes_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain_text(&e), "outer: inner");
        let e = WasmError::Invalid {
            source: "bad magic".into(),
        };
        assert_eq!(chain_text(&e), "invalid WebAssembly module: bad magic");
    }
}
