//! The module registry and topic attachment RPCs, and the translation between their messages
//! and the metadata.

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::Request;
use weir_proto::v1 as pb;
use weir_wasm::{ModuleId, sha256_hex};

use super::BrokerService;
use crate::error::BrokerError;
use crate::metadata::{
    Applied, Attachment, ClusterMetadata, Command, ModulePath, RejectPolicy, TopicInfo,
    check_module_name, check_params,
};
use crate::modules::{MAX_CHAIN_STAGES, StageSpec};

/// Checks a module name (the rules in [`check_module_name`]).
fn module_name(name: &str) -> Result<String, BrokerError> {
    check_module_name(name).map_err(BrokerError::InvalidArgument)?;
    Ok(name.to_owned())
}

fn module_path(value: i32) -> Result<ModulePath, BrokerError> {
    match pb::ModulePath::try_from(value) {
        Ok(pb::ModulePath::Produce) => Ok(ModulePath::Produce),
        Ok(pb::ModulePath::Consume) => Ok(ModulePath::Consume),
        _ => Err(BrokerError::InvalidArgument(
            "path must be MODULE_PATH_PRODUCE or MODULE_PATH_CONSUME".into(),
        )),
    }
}

fn pb_path(path: ModulePath) -> pb::ModulePath {
    match path {
        ModulePath::Produce => pb::ModulePath::Produce,
        ModulePath::Consume => pb::ModulePath::Consume,
    }
}

/// The params of a module reference, checked.
fn params(module: &str, params: &[pb::ModuleParam]) -> Result<Vec<(String, String)>, BrokerError> {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    check_params(module, &params).map_err(BrokerError::InvalidModuleParams)?;
    Ok(params)
}

/// Resolves a module reference against the registry: the version asked for, or the latest.
fn resolve(metadata: &ClusterMetadata, module: &pb::ModuleRef) -> Result<StageSpec, BrokerError> {
    let name = module_name(&module.name)?;
    let info = metadata.module(&name, module.version).ok_or_else(|| {
        BrokerError::UnknownModule(match module.version {
            Some(v) => format!("module '{name}' version {v} is not registered"),
            None => format!("module '{name}' is not registered"),
        })
    })?;
    Ok(StageSpec {
        params: params(&name, &module.params)?,
        id: ModuleId {
            name,
            version: info.version,
        },
    })
}

/// The chain a consume request runs: the one it names, else the topic's consume chain.
pub(super) fn consume_specs(
    metadata: &ClusterMetadata,
    topic: &TopicInfo,
    modules: &[pb::ModuleRef],
) -> Result<Vec<StageSpec>, BrokerError> {
    if modules.len() > MAX_CHAIN_STAGES {
        return Err(BrokerError::InvalidModuleParams(format!(
            "a chain has at most {MAX_CHAIN_STAGES} modules; {} given",
            modules.len()
        )));
    }
    if modules.is_empty() {
        return Ok(topic.consume_chain.iter().map(StageSpec::from).collect());
    }
    modules.iter().map(|m| resolve(metadata, m)).collect()
}

/// A topic's chain on `path`, as the API describes it.
pub(super) fn attachments(topic: &TopicInfo, path: ModulePath) -> Vec<pb::ModuleAttachment> {
    topic
        .chain(path)
        .iter()
        .map(|a| {
            let (on_reject, dead_letter_topic) = match &a.on_reject {
                RejectPolicy::Reject => (pb::RejectPolicy::Reject, String::new()),
                RejectPolicy::Drop => (pb::RejectPolicy::Drop, String::new()),
                RejectPolicy::DeadLetter(t) => (pb::RejectPolicy::DeadLetter, t.to_string()),
            };
            pb::ModuleAttachment {
                module: Some(pb::ModuleRef {
                    name: a.module.clone(),
                    version: Some(a.version),
                    params: a
                        .params
                        .iter()
                        .map(|(key, value)| pb::ModuleParam {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                }),
                path: pb_path(path) as i32,
                on_reject: on_reject as i32,
                dead_letter_topic,
            }
        })
        .collect()
}

impl BrokerService {
    fn describe_module_from(
        &self,
        metadata: &ClusterMetadata,
        name: &str,
    ) -> Result<pb::ModuleDescription, BrokerError> {
        let node = self.node()?;
        let versions = metadata.modules.get(name).ok_or_else(|| {
            BrokerError::UnknownModule(format!("module '{name}' is not registered"))
        })?;
        Ok(pb::ModuleDescription {
            name: name.to_owned(),
            versions: versions
                .values()
                .map(|v| {
                    let id = ModuleId {
                        name: name.to_owned(),
                        version: v.version,
                    };
                    let stats = node.modules.stats(&id, v).unwrap_or_default();
                    pb::ModuleVersion {
                        version: v.version,
                        sha256: v.sha256.clone(),
                        size_bytes: v.wasm.len() as u64,
                        registered_at_ms: v.registered_at_ms,
                        stats: Some(pb::ModuleStats {
                            invocations: stats.invocations,
                            records_in: stats.records_in,
                            records_out: stats.records_out,
                            records_rejected: stats.records_rejected,
                            errors: stats.errors,
                            busy_us: stats.busy.as_micros() as u64,
                            node_id: node.config.node_id,
                        }),
                    }
                })
                .collect(),
            attached: metadata
                .module_uses(name, None)
                .into_iter()
                .map(|(topic, path, version)| pb::ModuleUse {
                    topic: topic.to_string(),
                    path: pb_path(path) as i32,
                    version,
                })
                .collect(),
        })
    }

    pub(super) async fn handle_register_module(
        &self,
        request: Request<pb::RegisterModuleRequest>,
    ) -> Result<pb::ModuleDescription, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let name = module_name(&req.name)?;
        if req.version == Some(0) {
            return Err(BrokerError::InvalidArgument(
                "module versions start at 1".into(),
            ));
        }
        let sha256 = sha256_hex(&req.wasm);
        // Validated and compiled here, before anything is proposed: a module that does not
        // load on this node is never registered. (The version in the id only names the
        // module in errors and logs; the controller assigns the real one.)
        node.modules
            .compile(
                ModuleId {
                    name: name.clone(),
                    version: req.version.unwrap_or(0),
                },
                req.wasm.clone(),
            )
            .await?;
        let registered_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let applied = node
            .propose(Command::RegisterModule {
                name: name.clone(),
                version: req.version,
                sha256: sha256.clone(),
                registered_at_ms,
                wasm: req.wasm,
            })
            .await?;
        let version = match applied {
            Applied::ModuleVersion(v) => v,
            other => {
                return Err(BrokerError::Internal(format!(
                    "controller answered {other:?} to a module registration"
                )));
            }
        };
        tracing::info!(module = %name, version, %sha256, "module registered");
        node.wait_for_metadata(|m| m.module(&name, Some(version)).is_some())
            .await;
        let metadata = node.metadata();
        self.describe_module_from(&metadata, &name)
    }

    pub(super) async fn handle_list_modules(
        &self,
        _request: Request<pb::ListModulesRequest>,
    ) -> Result<pb::ListModulesResponse, BrokerError> {
        let metadata = self.node()?.metadata();
        let modules = metadata
            .modules
            .keys()
            .map(|name| self.describe_module_from(&metadata, name))
            .collect::<Result<_, _>>()?;
        Ok(pb::ListModulesResponse { modules })
    }

    pub(super) async fn handle_describe_module(
        &self,
        request: Request<pb::DescribeModuleRequest>,
    ) -> Result<pb::ModuleDescription, BrokerError> {
        let name = module_name(&request.get_ref().name)?;
        self.describe_module_from(&self.node()?.metadata(), &name)
    }

    pub(super) async fn handle_delete_module(
        &self,
        request: Request<pb::DeleteModuleRequest>,
    ) -> Result<pb::DeleteModuleResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let name = module_name(&req.name)?;
        node.propose(Command::DeleteModule {
            name: name.clone(),
            version: req.version,
        })
        .await?;
        node.wait_for_metadata(|m| m.module(&name, req.version).is_none())
            .await;
        tracing::info!(module = %name, version = ?req.version, "module deleted");
        Ok(pb::DeleteModuleResponse {})
    }

    pub(super) async fn handle_attach_module(
        &self,
        request: Request<pb::AttachModuleRequest>,
    ) -> Result<pb::DescribeTopicResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let topic = self.topic(&req.topic).await?;
        let path = module_path(req.path)?;
        let module = req
            .module
            .ok_or_else(|| BrokerError::InvalidArgument("no module given".into()))?;
        let metadata = node.metadata();
        let spec = resolve(&metadata, &module)?;
        let policy = pb::RejectPolicy::try_from(req.on_reject).map_err(|_| {
            BrokerError::InvalidArgument(format!("unknown reject policy {}", req.on_reject))
        })?;
        let on_reject = match (path, policy) {
            (_, pb::RejectPolicy::Unspecified | pb::RejectPolicy::Reject) => RejectPolicy::Reject,
            (ModulePath::Consume, _) => {
                return Err(BrokerError::InvalidArgument(
                    "reject policies apply to the produce path only; a consume chain reports rejected records to the consumer".into(),
                ));
            }
            (ModulePath::Produce, pb::RejectPolicy::Drop) => RejectPolicy::Drop,
            (ModulePath::Produce, pb::RejectPolicy::DeadLetter) => {
                let dead_letter = BrokerError::topic_name(&req.dead_letter_topic)?;
                if let Some(target) = metadata.topics.get(&dead_letter)
                    && target
                        .produce_chain
                        .iter()
                        .any(|a| matches!(a.on_reject, RejectPolicy::DeadLetter(_)))
                {
                    return Err(BrokerError::InvalidArgument(format!(
                        "dead-letter topic '{dead_letter}' sends rejects to a dead-letter topic of its own; dead-letter topics do not chain"
                    )));
                }
                RejectPolicy::DeadLetter(dead_letter)
            }
        };
        if !matches!(on_reject, RejectPolicy::DeadLetter(_)) && !req.dead_letter_topic.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "dead_letter_topic is only meaningful with REJECT_POLICY_DEAD_LETTER".into(),
            ));
        }
        if topic.chain(path).len() >= MAX_CHAIN_STAGES {
            return Err(BrokerError::InvalidArgument(format!(
                "the {path} chain of topic '{}' already has {MAX_CHAIN_STAGES} modules",
                topic.name
            )));
        }
        // Runs the module's init with the parameters: they are refused here, not on the first
        // record.
        node.modules
            .chain(&metadata, std::slice::from_ref(&spec), true)
            .await?;
        node.propose(Command::AttachModule {
            topic: topic.name.clone(),
            path,
            attachment: Attachment {
                module: spec.id.name.clone(),
                version: spec.id.version,
                params: spec.params,
                on_reject,
            },
        })
        .await?;
        tracing::info!(module = %spec.id, %path, "module attached");
        let in_chain = |m: &ClusterMetadata| {
            m.topics
                .get(&topic.name)
                .is_some_and(|t| t.chain(path).iter().any(|a| a.module == spec.id.name))
        };
        node.wait_for_metadata(in_chain).await;
        self.described(&topic.name).await
    }

    pub(super) async fn handle_detach_module(
        &self,
        request: Request<pb::DetachModuleRequest>,
    ) -> Result<pb::DescribeTopicResponse, BrokerError> {
        let node = self.node()?;
        let req = request.into_inner();
        let topic = self.topic(&req.topic).await?;
        let path = module_path(req.path)?;
        let module = module_name(&req.name)?;
        node.propose(Command::DetachModule {
            topic: topic.name.clone(),
            path,
            module: module.clone(),
        })
        .await?;
        node.wait_for_metadata(|m| {
            m.topics
                .get(&topic.name)
                .is_none_or(|t| t.chain(path).iter().all(|a| a.module != module))
        })
        .await;
        self.described(&topic.name).await
    }

    /// The topic as this node's metadata has it now (after a change this node proposed).
    async fn described(
        &self,
        name: &weir_types::TopicName,
    ) -> Result<pb::DescribeTopicResponse, BrokerError> {
        let topic = self.topic(name.as_str()).await?;
        Ok(pb::DescribeTopicResponse {
            topic: Some(self.describe(&topic).await?),
        })
    }
}
