//! The runtime: the wasmtime engine of a node, its epoch ticker, the host side of the world, the
//! compiled-module cache, and the path from registered bytes to a [`Module`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, ProfilingStrategy};

use std::hash::{Hash, Hasher};

use crate::cache::{self, ArtifactCache, CacheCounters, CacheStats, Lookup, StableHasher};
use crate::error::{WasmError, chain_text};
use crate::limits::{EPOCH_TICK, MemoryLayout, WasmLimits};
use crate::module::{self, HostState, Module, ModuleId, ModuleParts};
use crate::world::{self, Binary};

/// SHA-256 of `bytes` in lowercase hex: how modules are identified on disk and in the registry.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What the runtime's modules and instances share; the ticker stops when the last of them goes.
pub(crate) struct Shared {
    engine: Engine,
    linker: Linker<HostState>,
    limits: WasmLimits,
    cache: Option<ArtifactCache>,
    /// Identifies the engine configuration in cache keys.
    engine_tag: String,
    cache_counters: CacheCounters,
    /// Instances holding a slot of the pool now.
    live_instances: Arc<AtomicU32>,
    /// Dropping it stops the ticker thread.
    _ticker: mpsc::Sender<()>,
}

impl Shared {
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn limits(&self) -> &WasmLimits {
        &self.limits
    }

    /// Counts an instance that got a slot of the pool until the returned guard drops.
    pub(crate) fn pool_slot(&self) -> PoolSlot {
        self.live_instances.fetch_add(1, Ordering::Relaxed);
        PoolSlot(self.live_instances.clone())
    }
}

/// An instance's share of [`Runtime::instances_in_use`]; kept in the instance's store, so it goes
/// when the store (and with it the pool slot) does.
#[derive(Debug)]
pub(crate) struct PoolSlot(Arc<AtomicU32>);

impl Drop for PoolSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Set to `1`, the environment variable that makes a runtime write `/tmp/perf-<pid>.map`, naming
/// the compiled modules' functions for `perf report` (docs/benchmarks.md, "Profiling modules").
pub const PERF_MAP_VAR: &str = "WEIR_WASM_PERFMAP";

/// The WebAssembly runtime of a node: compiles modules once and runs them in a bounded pool of
/// sandboxed instances.
///
/// Creating one reserves the pool's address space (about `max_instances` × (memory limit +
/// 64 KiB), 16.5 GiB with the defaults; nothing is committed until instances use it) and starts
/// a thread that advances the engine's epoch every 10 ms, which enforces the per-call time
/// limit. The thread stops when the runtime and every module and instance from it are dropped.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.shared.limits)
            .field("cache", &self.shared.cache)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts a runtime with these limits and the [`MemoryLayout::Compact`] layout, caching
    /// compiled modules in `cache_dir` (created if missing) when given.
    ///
    /// Cache files are `<cache_dir>/<sha256 of the module>-<engine tag>.cwasm`, the tag
    /// standing for the wasmtime version and engine configuration. Each file carries a SHA-256
    /// digest that is checked before the artifact is deserialized; a damaged file is removed
    /// and the module compiled again ([`Runtime::cache_stats`] counts both).
    pub fn new(limits: WasmLimits, cache_dir: Option<PathBuf>) -> Result<Runtime, WasmError> {
        Self::with_memory_layout(limits, cache_dir, MemoryLayout::Compact)
    }

    /// [`Runtime::new`] with a choice of how linear memories are laid out in the address space.
    pub fn with_memory_layout(
        limits: WasmLimits,
        cache_dir: Option<PathBuf>,
        layout: MemoryLayout,
    ) -> Result<Runtime, WasmError> {
        limits.check().map_err(|problem| WasmError::InvalidLimits {
            reason: problem.to_string(),
        })?;
        let mut config = limits.engine_config(layout);
        if std::env::var_os(PERF_MAP_VAR).is_some_and(|v| v == "1") {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine { source: e.into() })?;
        let engine_tag = {
            let mut hasher = StableHasher::default();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        };

        let mut linker = Linker::new(&engine);
        linker
            .instance(world::HOST_INTERFACE)
            .and_then(|mut host| host.func_wrap(world::LOG, module::host_log))
            .map_err(|e| WasmError::Engine { source: e.into() })?;

        let cache = cache_dir
            .map(|path| {
                ArtifactCache::open(path.clone())
                    .map_err(|source| WasmError::Cache { path, source })
            })
            .transpose()?;

        let (stop, stopped) = mpsc::channel::<()>();
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("weir-wasm-epoch".into())
            .spawn(move || {
                // Ends when every sender is gone, i.e. when the runtime's shared state drops.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| WasmError::Engine { source: e.into() })?;

        Ok(Runtime {
            shared: Arc::new(Shared {
                engine,
                linker,
                limits,
                cache,
                engine_tag,
                cache_counters: CacheCounters::default(),
                live_instances: Arc::new(AtomicU32::new(0)),
                _ticker: stop,
            }),
        })
    }

    /// The limits this runtime enforces.
    pub fn limits(&self) -> &WasmLimits {
        &self.shared.limits
    }

    /// Instances that hold a slot of the pool now, out of [`WasmLimits::max_instances`]: every
    /// [`Instance`](crate::Instance) alive, wherever it is kept.
    pub fn instances_in_use(&self) -> u32 {
        self.shared.live_instances.load(Ordering::Relaxed)
    }

    /// How the compiled-module cache has served [`Runtime::load`] so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.shared.cache_counters.snapshot()
    }

    /// Turns module bytes into a runnable [`Module`]: checks the size limit, accepts a component
    /// or a core module carrying a `component-type` section (componentizing it), checks the
    /// world (imports only `weir:module/host@1.0.0`, exports `weir:module/processor@1.0.0` with
    /// the right types), compiles it or loads its compiled artifact from the cache, links it and
    /// tries one instantiation (without calling `init`) so a module that cannot run within the
    /// sandbox limits is refused now.
    ///
    /// CPU-bound: compiling takes from milliseconds to seconds. Each call compiles anew (or
    /// reads the cache); keep the returned module rather than loading it per request.
    pub fn load(&self, id: ModuleId, bytes: &[u8]) -> Result<Arc<Module>, WasmError> {
        let limits = &self.shared.limits;
        if bytes.len() > limits.max_module_bytes {
            return Err(WasmError::TooLarge {
                size: bytes.len(),
                limit: limits.max_module_bytes,
            });
        }
        let sha256 = sha256_hex(bytes);
        let key = format!("{sha256}-{}", self.shared.engine_tag);
        let (component, from_cache) = match self.cached(&key) {
            Some(component) => (component, true),
            None => (self.compile(&key, bytes)?, false),
        };
        world::check_component(&self.shared.engine, &component.component_type())?;

        let pre = self
            .shared
            .linker
            .instantiate_pre(&component)
            .map_err(|e| WasmError::Instantiate { source: e.into() })?;
        let processor = component
            .get_export_index(None, world::PROCESSOR_INTERFACE)
            .ok_or_else(|| WasmError::MissingExport {
                name: world::PROCESSOR_INTERFACE.to_owned(),
            })?;
        let export = |name: &str| {
            component
                .get_export_index(Some(&processor), name)
                .ok_or_else(|| WasmError::MissingExport {
                    name: format!("{}#{name}", world::PROCESSOR_INTERFACE),
                })
        };
        let (init, process) = (export(world::INIT)?, export(world::PROCESS)?);
        let module = Arc::new(Module::new(
            ModuleParts {
                id,
                sha256,
                size: bytes.len(),
                from_cache,
                pre,
                init,
                process,
            },
            self.shared.clone(),
        ));
        self.trial_instantiation(&module)?;
        Ok(module)
    }

    /// The cached compiled artifact under `key`, if there is a valid one. A corrupt or
    /// incompatible file is removed and counted; any problem means "compile".
    fn cached(&self, key: &str) -> Option<Component> {
        let cache = self.shared.cache.as_ref()?;
        let file = match cache.read(key) {
            Ok(file) => file?,
            Err(e) => {
                tracing::warn!(path = %cache.path(key).display(), error = %e, "cannot read a cached compiled module; compiling it again");
                return None;
            }
        };
        let loaded = match cache::decode(key, &file) {
            Lookup::Valid(artifact) => {
                // SAFETY: `Component::deserialize` trusts its input to be an artifact that this
                // wasmtime produced with a compatible configuration. `cache::decode` has just
                // checked the file's SHA-256 digest, which the cache writes together with the
                // artifact that `Component::serialize` produced for exactly this source module
                // and engine configuration (the digest covers the key: the source's hash and the
                // engine's tag), so the bytes are exactly what this wasmtime wrote for this
                // engine. `deserialize` still checks the version and configuration recorded in
                // the artifact and refuses a mismatch with an error, handled below.
                #[allow(unsafe_code)]
                let component = unsafe { Component::deserialize(&self.shared.engine, artifact) };
                component.map_err(|e| chain_text(e.as_ref()))
            }
            Lookup::Corrupt => Err("its integrity check failed".to_owned()),
        };
        match loaded {
            Ok(component) => {
                self.shared.cache_counters.hit();
                Some(component)
            }
            Err(reason) => {
                self.shared.cache_counters.rejected();
                tracing::warn!(path = %cache.path(key).display(), %reason, "discarding a cached compiled module; compiling it again");
                if let Err(e) = cache.remove(key) {
                    tracing::warn!(path = %cache.path(key).display(), error = %e, "cannot remove a bad cached compiled module");
                }
                None
            }
        }
    }

    /// Validates, componentizes and compiles module bytes, and caches the result under `key`.
    fn compile(&self, key: &str, bytes: &[u8]) -> Result<Component, WasmError> {
        let component_bytes;
        let component_source = match world::classify(bytes)? {
            Binary::Component => bytes,
            Binary::Core => {
                world::check_core(bytes)?;
                component_bytes = componentize(bytes)?;
                &component_bytes
            }
        };
        let component = Component::new(&self.shared.engine, component_source).map_err(|e| {
            // wasmtime validates before compiling: most failures here are invalid input.
            WasmError::Compile { source: e.into() }
        })?;
        self.shared.cache_counters.compiled();
        if let Some(cache) = &self.shared.cache {
            let written = component
                .serialize()
                .map_err(|e| std::io::Error::other(chain_text(e.as_ref())))
                .and_then(|artifact| cache.write(key, &artifact));
            if let Err(e) = written {
                // The module works without the cache; the next load compiles again.
                tracing::warn!(path = %cache.path(key).display(), error = %e, "cannot cache a compiled module");
            }
        }
        Ok(component)
    }

    /// Instantiates the module once, without calling into it, so that one whose memory or tables
    /// cannot fit the sandbox (or whose start function traps) is refused at load time. A full
    /// pool proves nothing about the module and is not an error here.
    fn trial_instantiation(&self, module: &Module) -> Result<(), WasmError> {
        let mut store = module.new_store();
        match module.pre_instantiate(&mut store) {
            Ok(_) => Ok(()),
            Err(e) if e.is_pool_exhausted() => Ok(()),
            Err(e) => Err(WasmError::Instantiate { source: e.into() }),
        }
    }
}

/// Turns a core module with a `component-type` section (what wit-bindgen produces) into a
/// component. The module has been validated; a panic in the componentizer on some input it did
/// not expect is still caught and reported as an invalid module, never allowed to unwind
/// through the caller.
fn componentize(core: &[u8]) -> Result<Vec<u8>, WasmError> {
    let invalid = |e: Box<dyn std::error::Error + Send + Sync>| WasmError::Invalid { source: e };
    let encoded = std::panic::catch_unwind(|| {
        wit_component::ComponentEncoder::default()
            .module(core)?
            .validate(true)
            .encode()
    });
    match encoded {
        Ok(Ok(component)) => Ok(component),
        Ok(Err(e)) => Err(invalid(e.into())),
        Err(_) => Err(invalid(
            "the component encoder failed on this module (it panicked)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Runtime>();
        send_sync::<Module>();
        send::<crate::Instance>();
        send::<crate::Chain>();
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_hex(b"").len(), 64);
    }

    #[test]
    fn runtimes_refuse_unusable_limits() {
        let limits = WasmLimits {
            max_instances: 0,
            ..WasmLimits::default()
        };
        let err = Runtime::new(limits, None).expect_err("no instances");
        assert_eq!(
            err.to_string(),
            "invalid module limits: max_instances must be at least 1"
        );
    }

    #[test]
    fn garbage_and_oversized_bytes_are_refused_before_compiling() {
        let limits = WasmLimits {
            max_module_bytes: 100,
            max_instances: 2,
            ..WasmLimits::default()
        };
        let runtime = Runtime::new(limits, None).expect("runtime");
        let id = ModuleId {
            name: "x".into(),
            version: 1,
        };
        let err = runtime.load(id.clone(), &[0; 101]).expect_err("too large");
        assert_eq!(
            err.to_string(),
            "module is 101 bytes, over the limit of 100 bytes"
        );
        let err = runtime.load(id.clone(), b"not wasm").expect_err("garbage");
        assert!(matches!(err, WasmError::NotWasm), "{err}");
        let err = runtime
            .load(id, b"\0asm\x01\0\0\0\x05garbage")
            .expect_err("bad section");
        assert!(matches!(err, WasmError::Invalid { .. }), "{err}");
        assert_eq!(runtime.cache_stats().compiled, 0);
    }
}
