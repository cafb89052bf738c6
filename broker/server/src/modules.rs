//! Modules on this node: the wasm runtime (created on first use, so a broker that never runs a
//! module never reserves its memory pool), the compiled modules of the registered versions, and
//! the produce chains of the topics this node leads, pooled so a produce request reuses warm
//! instances instead of instantiating its chain.
//!
//! Module code runs on the blocking pool, bounded per call by the runtime's wall-clock limit:
//! never on a tokio worker.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use weir_types::{Header, Record, TopicName};
use weir_wasm::{
    Chain, ChainError, ChainOutput, ChainRecord, Module, ModuleId, ModuleStats, Runtime, Stage,
    WasmError, WasmLimits,
};

use crate::error::BrokerError;
use crate::lock;
use crate::metadata::{Attachment, ClusterMetadata, ModuleVersionInfo, TopicInfo};
use crate::node::blocking;

pub(crate) use crate::metadata::MAX_CHAIN_STAGES;
/// Idle produce chains kept per topic: about the produce requests one topic runs at once.
const IDLE_CHAINS_PER_TOPIC: usize = 4;

/// A module of a chain as a request names it, resolved against the registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StageSpec {
    /// Module and version.
    pub(crate) id: ModuleId,
    /// `init` parameters, in order.
    pub(crate) params: Vec<(String, String)>,
}

impl From<&Attachment> for StageSpec {
    fn from(a: &Attachment) -> Self {
        StageSpec {
            id: ModuleId {
                name: a.module.clone(),
                version: a.version,
            },
            params: a.params.clone(),
        }
    }
}

struct PooledChains {
    stages: Vec<StageSpec>,
    idle: Vec<Chain>,
}

/// A compiled module and the registration it belongs to.
struct Loaded {
    registered_at_ms: i64,
    module: Arc<Module>,
}

impl Loaded {
    fn is_of(&self, info: &ModuleVersionInfo) -> bool {
        self.registered_at_ms == info.registered_at_ms && self.module.sha256() == info.sha256
    }
}

/// The modules of one node.
pub(crate) struct ModuleHost {
    limits: WasmLimits,
    cache_dir: PathBuf,
    runtime: Mutex<Option<Arc<Runtime>>>,
    /// Compiled modules in use, with the registration they were loaded for: a version deleted
    /// and registered again (versions restart at 1 once a name has none) is another module,
    /// with counters of its own.
    loaded: Mutex<HashMap<ModuleId, Loaded>>,
    produce_chains: Mutex<HashMap<TopicName, PooledChains>>,
}

impl ModuleHost {
    /// A host that compiles into (and loads compiled modules from) `cache_dir`.
    pub(crate) fn new(limits: WasmLimits, cache_dir: PathBuf) -> Self {
        Self {
            limits,
            cache_dir,
            runtime: Mutex::new(None),
            loaded: Mutex::new(HashMap::new()),
            produce_chains: Mutex::new(HashMap::new()),
        }
    }

    fn runtime(&self) -> Result<Arc<Runtime>, BrokerError> {
        let mut runtime = lock(&self.runtime);
        if let Some(r) = runtime.as_ref() {
            return Ok(r.clone());
        }
        let created = Arc::new(
            Runtime::new(self.limits.clone(), Some(self.cache_dir.clone())).map_err(|e| {
                BrokerError::Internal(format!("cannot start the module runtime: {e}"))
            })?,
        );
        *runtime = Some(created.clone());
        Ok(created)
    }

    /// Validates and compiles module bytes about to be registered; the compiled artifact is
    /// cached, so the first use after registration does not compile again.
    pub(crate) async fn compile(&self, id: ModuleId, wasm: Bytes) -> Result<(), BrokerError> {
        let runtime = self.runtime()?;
        // Not kept in `loaded`: the controller assigns the version, so the id here is
        // provisional. The first use finds the compiled artifact in the cache.
        let name = id.name.clone();
        blocking(move || {
            runtime
                .load(id, &wasm)
                .map(drop)
                .map_err(|e| invalid_module(&name, &e))
        })
        .await
    }

    /// The compiled module of a registered version.
    async fn module(
        &self,
        id: &ModuleId,
        info: &ModuleVersionInfo,
    ) -> Result<Arc<Module>, BrokerError> {
        if let Some(loaded) = lock(&self.loaded).get(id)
            && loaded.is_of(info)
        {
            return Ok(loaded.module.clone());
        }
        let runtime = self.runtime()?;
        let (owned_id, wasm) = (id.clone(), info.wasm.clone());
        let module = blocking(move || {
            runtime.load(owned_id.clone(), &wasm).map_err(|e| {
                BrokerError::Internal(format!(
                    "registered module '{owned_id}' does not load on this node: {e}"
                ))
            })
        })
        .await?;
        let loaded = Loaded {
            registered_at_ms: info.registered_at_ms,
            module: module.clone(),
        };
        lock(&self.loaded).insert(id.clone(), loaded);
        Ok(module)
    }

    /// Builds a chain; with `prepare`, instantiates every stage and runs its `init` now, so bad
    /// parameters are reported before any record is processed.
    pub(crate) async fn chain(
        &self,
        metadata: &ClusterMetadata,
        specs: &[StageSpec],
        prepare: bool,
    ) -> Result<Chain, BrokerError> {
        let mut stages = Vec::with_capacity(specs.len());
        for spec in specs {
            let info = metadata
                .module(&spec.id.name, Some(spec.id.version))
                .ok_or_else(|| {
                    BrokerError::UnknownModule(format!("module '{}' is not registered", spec.id))
                })?;
            stages.push(Stage {
                module: self.module(&spec.id, info).await?,
                params: spec.params.clone(),
            });
        }
        let chain = Chain::new(stages);
        if prepare {
            return self.prepare(chain).await;
        }
        Ok(chain)
    }

    /// Instantiates every stage of `chain` and runs its `init`. When the node's instance pool
    /// is full, the idle produce chains kept for reuse give their instances back and the chain
    /// tries once more: warm chains are a cache, and must not starve subscriptions or the
    /// produce chains of other topics.
    async fn prepare(&self, chain: Chain) -> Result<Chain, BrokerError> {
        let (chain, result) = Self::release_and_prepare(Vec::new(), chain).await?;
        match result {
            Err(e) if e.error.is_pool_exhausted() => {
                let idle = self.take_idle_produce_chains();
                if idle.is_empty() {
                    return Err(module_failure(e));
                }
                tracing::info!(
                    released = idle.len(),
                    "module instance pool full: releasing idle produce chains"
                );
                let (chain, result) = Self::release_and_prepare(idle, chain).await?;
                result.map(|()| chain).map_err(module_failure)
            }
            result => result.map(|()| chain).map_err(module_failure),
        }
    }

    /// On the blocking pool, drops `released` (which resets their instances' memory) and then
    /// prepares `chain`; a chain that fails part-way keeps the instances it got.
    async fn release_and_prepare(
        released: Vec<Chain>,
        chain: Chain,
    ) -> Result<(Chain, Result<(), ChainError>), BrokerError> {
        blocking(move || {
            drop(released);
            let mut chain = chain;
            let result = chain.prepare();
            Ok((chain, result))
        })
        .await
    }

    /// Takes every idle produce chain out of the pools; dropping them frees their instances.
    fn take_idle_produce_chains(&self) -> Vec<Chain> {
        lock(&self.produce_chains)
            .values_mut()
            .flat_map(|pool| pool.idle.drain(..))
            .collect()
    }

    /// Runs `chain` over `input` on the blocking pool. Stages without an instance get one (and
    /// run their `init`) first, on the same trip to the pool: a chain built for one request
    /// costs one hand-off to a blocking thread, not two. When the node's instance pool is full
    /// the idle produce chains give way, as for [`ModuleHost::prepare`].
    ///
    /// The chain comes back only when it ran cleanly; after a failure its instances are not
    /// trusted again.
    pub(crate) async fn run(
        &self,
        chain: Chain,
        input: Vec<ChainRecord>,
    ) -> Result<(Chain, ChainOutput), BrokerError> {
        match Self::prepare_and_run(chain, input).await? {
            Ran::Done(chain, output) => Ok((chain, output)),
            Ran::PoolFull(chain, input) => {
                let chain = self.prepare(chain).await?;
                match Self::prepare_and_run(chain, input).await? {
                    Ran::Done(chain, output) => Ok((chain, output)),
                    Ran::PoolFull(..) => Err(BrokerError::Internal(
                        "a prepared chain found the instance pool full".into(),
                    )),
                }
            }
        }
    }

    /// [`ModuleHost::run`]'s trip to the blocking pool: the chain comes back unrun when a
    /// stage found the instance pool full.
    async fn prepare_and_run(chain: Chain, input: Vec<ChainRecord>) -> Result<Ran, BrokerError> {
        blocking(move || {
            let mut chain = chain;
            match chain.prepare() {
                Ok(()) => {}
                Err(e) if e.error.is_pool_exhausted() => return Ok(Ran::PoolFull(chain, input)),
                Err(e) => return Err(module_failure(e)),
            }
            let output = chain.run(input).map_err(module_failure)?;
            Ok(Ran::Done(chain, output))
        })
        .await
    }

    /// Runs a topic's produce chain over a request's records (positions are request indices),
    /// reusing an idle chain of the same attachments when there is one.
    pub(crate) async fn run_produce(
        &self,
        metadata: &ClusterMetadata,
        topic: &TopicInfo,
        records: Vec<Record>,
    ) -> Result<ChainOutput, BrokerError> {
        let specs: Vec<StageSpec> = topic.produce_chain.iter().map(StageSpec::from).collect();
        let idle = {
            let mut pools = lock(&self.produce_chains);
            match pools.get_mut(&topic.name) {
                Some(pool) if pool.stages == specs => pool.idle.pop(),
                _ => None,
            }
        };
        let chain = match idle {
            Some(chain) => chain,
            None => self.chain(metadata, &specs, false).await?,
        };
        let input = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| ChainRecord {
                position: i as u64,
                record,
            })
            .collect();
        let (chain, output) = self.run(chain, input).await?;
        let mut pools = lock(&self.produce_chains);
        let pool = pools
            .entry(topic.name.clone())
            .or_insert_with(|| PooledChains {
                stages: specs.clone(),
                idle: Vec::new(),
            });
        if pool.stages != specs {
            // The chain changed while this request ran: start a pool for the new one.
            *pool = PooledChains {
                stages: specs,
                idle: Vec::new(),
            };
        } else if pool.idle.len() < IDLE_CHAINS_PER_TOPIC {
            pool.idle.push(chain);
        }
        Ok(output)
    }

    /// Module instances alive on this node (stages of running chains, subscriptions and warm
    /// produce chains), and how many it may hold (`modules.max_instances`).
    pub(crate) fn instances(&self) -> (u32, u32) {
        let in_use = lock(&self.runtime)
            .as_ref()
            .map_or(0, |runtime| runtime.instances_in_use());
        (in_use, self.limits.max_instances)
    }

    /// This node's counters of the registered module version `id` (`info`); `None` if it has
    /// not run it.
    pub(crate) fn stats(&self, id: &ModuleId, info: &ModuleVersionInfo) -> Option<ModuleStats> {
        lock(&self.loaded)
            .get(id)
            .filter(|loaded| loaded.is_of(info))
            .map(|loaded| loaded.module.stats())
    }

    /// Counters of every version in `registry` this node has run. Modules deleted since they
    /// were loaded are dropped here, with their compiled code.
    pub(crate) fn registered_stats(
        &self,
        registry: &BTreeMap<String, BTreeMap<u32, ModuleVersionInfo>>,
    ) -> Vec<(ModuleId, ModuleStats)> {
        let mut loaded = lock(&self.loaded);
        loaded.retain(|id, loaded| {
            registry
                .get(&id.name)
                .and_then(|versions| versions.get(&id.version))
                .is_some_and(|info| loaded.is_of(info))
        });
        let mut all: Vec<_> = loaded
            .iter()
            .map(|(id, loaded)| (id.clone(), loaded.module.stats()))
            .collect();
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name).then(a.0.version.cmp(&b.0.version)));
        all
    }
}

/// Header names set on dead-lettered records.
pub(crate) mod dead_letter_headers {
    /// Why the record was rejected.
    pub(crate) const REASON: &str = "weir.rejected.reason";
    /// The rejecting module, as NAME@VERSION.
    pub(crate) const MODULE: &str = "weir.rejected.module";
    /// The topic the record was produced to.
    pub(crate) const TOPIC: &str = "weir.rejected.topic";
    /// The record's index in its produce request.
    pub(crate) const INDEX: &str = "weir.rejected.index";
}

/// A rejected record as it goes to a dead-letter topic: the record as it reached the rejecting
/// module, plus headers saying why, by whom and from where.
pub(crate) fn dead_letter_record(
    mut record: Record,
    topic: &TopicName,
    index: u64,
    module: &ModuleId,
    reason: &str,
) -> Record {
    let mut add = |key: &str, value: String| {
        record.headers.push(Header {
            key: key.to_owned(),
            value: Bytes::from(value),
        })
    };
    add(dead_letter_headers::REASON, reason.to_owned());
    add(dead_letter_headers::MODULE, module.to_string());
    add(dead_letter_headers::TOPIC, topic.to_string());
    add(dead_letter_headers::INDEX, index.to_string());
    record
}

fn invalid_module(name: &str, e: &WasmError) -> BrokerError {
    BrokerError::InvalidModule {
        name: name.to_owned(),
        reason: crate::error::error_chain(e),
    }
}

/// What became of a chain sent to run.
enum Ran {
    /// It ran: the chain and its output.
    Done(Chain, ChainOutput),
    /// A stage found the instance pool full: the chain (with the instances it got) and its
    /// input, not run.
    PoolFull(Chain, Vec<ChainRecord>),
}

fn module_failure(e: ChainError) -> BrokerError {
    let module = e.error.module().to_string();
    if e.error.is_invalid_params() {
        BrokerError::InvalidModuleParams(e.error.to_string())
    } else if e.error.is_pool_exhausted() {
        BrokerError::ModulePoolExhausted(format!("{} (modules.max_instances)", e.error))
    } else {
        BrokerError::ModuleFailed {
            module,
            message: e.error.to_string(),
        }
    }
}
