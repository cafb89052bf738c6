//! Module types: references to registered WebAssembly modules with their parameters, the two
//! paths a module runs on, what happens to the records a produce-path module rejects, and the
//! registry's description of a module; with their conversions from and to the wire messages.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use weir_proto::v1;

use crate::ClientError;

/// The syntax [`ModuleRef`] parses, for error messages.
const MODULE_REF_SYNTAX: &str = "NAME[@VERSION][:KEY=VALUE,...]";

/// A registered module and the parameters its `init` receives: a stage of a module chain.
///
/// Parses from the command-line syntax `NAME[@VERSION][:KEY=VALUE,KEY=VALUE...]`: without a
/// version the broker takes the latest one (resolved when attaching, so an attachment never
/// changes by itself). Parameters are split at `,`, and each at its first `=`, so a value may
/// contain `=` but not `,`; such a value can only be given with [`ModuleRef::with_param`].
/// Parameters keep their order.
///
/// ```
/// use weir_client::ModuleRef;
///
/// let parsed: ModuleRef = "field-filter@2:field=type,equals=a=b".parse()?;
/// let built = ModuleRef::new("field-filter")
///     .with_version(2)
///     .with_param("field", "type")
///     .with_param("equals", "a=b");
/// assert_eq!(parsed, built);
/// assert_eq!(built.to_string(), "field-filter@2:field=type,equals=a=b");
/// # Ok::<(), weir_client::ParseModuleRefError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleRef {
    /// The module's registered name.
    pub name: String,
    /// The version; `None` means the latest registered one.
    pub version: Option<u32>,
    /// Parameters as `(key, value)` pairs, in the order `init` receives them.
    pub params: Vec<(String, String)>,
}

impl ModuleRef {
    /// The latest version of the module `name`, without parameters.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: None,
            params: Vec::new(),
        }
    }

    /// Pins the version.
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Appends a parameter.
    pub fn with_param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((key.into(), value.into()));
        self
    }

    /// `NAME@VERSION`, or just `NAME` without a version: how the broker names a module in
    /// rejections and errors.
    pub fn versioned_name(&self) -> String {
        match self.version {
            Some(version) => format!("{}@{version}", self.name),
            None => self.name.clone(),
        }
    }
}

/// What is wrong with a module reference given as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid module reference {input:?}: {problem} (expected {MODULE_REF_SYNTAX})")]
pub struct ParseModuleRefError {
    /// The refused text.
    pub input: String,
    /// What is wrong with it.
    pub problem: ModuleRefProblem,
}

/// The part of a module reference that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleRefProblem {
    /// Nothing before `@` or `:`.
    #[error("the module name is empty")]
    EmptyName,
    /// The name contains a character that belongs to the parameter syntax.
    #[error("the module name {name:?} contains {found:?}; parameters follow a ':'")]
    NameHasSeparator {
        /// The name as given.
        name: String,
        /// The offending character.
        found: char,
    },
    /// The text after `@` is not a version number from 1.
    #[error("version {version:?} is not a number from 1 to {max}", max = u32::MAX)]
    InvalidVersion {
        /// The version as given.
        version: String,
    },
    /// A `:` with no parameters after it.
    #[error("no parameters after ':'")]
    NoParams,
    /// Two commas in a row, or a comma at the end.
    #[error("parameter {position} is empty")]
    EmptyParam {
        /// Which parameter, from 1.
        position: usize,
    },
    /// A parameter without `=`.
    #[error("parameter {param:?} has no '=': write KEY=VALUE")]
    MissingEquals {
        /// The parameter as given.
        param: String,
    },
    /// A parameter with nothing before its `=`.
    #[error("parameter {param:?} has an empty key")]
    EmptyKey {
        /// The parameter as given.
        param: String,
    },
}

impl FromStr for ModuleRef {
    type Err = ParseModuleRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |problem| ParseModuleRefError {
            input: s.to_owned(),
            problem,
        };
        let (head, params) = match s.split_once(':') {
            Some((head, params)) => (head, Some(params)),
            None => (s, None),
        };
        let (name, version) = match head.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (head, None),
        };
        if name.is_empty() {
            return Err(fail(ModuleRefProblem::EmptyName));
        }
        if let Some(found) = name.chars().find(|c| matches!(c, '=' | ',')) {
            return Err(fail(ModuleRefProblem::NameHasSeparator {
                name: name.to_owned(),
                found,
            }));
        }
        let version = version
            .map(|version| {
                version
                    .parse::<u32>()
                    .ok()
                    // Only digits: `u32::from_str` also takes a leading '+'.
                    .filter(|&v| v > 0 && version.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        fail(ModuleRefProblem::InvalidVersion {
                            version: version.to_owned(),
                        })
                    })
            })
            .transpose()?;
        let params = match params {
            None => Vec::new(),
            Some("") => return Err(fail(ModuleRefProblem::NoParams)),
            Some(params) => params
                .split(',')
                .enumerate()
                .map(|(i, param)| {
                    if param.is_empty() {
                        return Err(fail(ModuleRefProblem::EmptyParam { position: i + 1 }));
                    }
                    let (key, value) = param.split_once('=').ok_or_else(|| {
                        fail(ModuleRefProblem::MissingEquals {
                            param: param.to_owned(),
                        })
                    })?;
                    if key.is_empty() {
                        return Err(fail(ModuleRefProblem::EmptyKey {
                            param: param.to_owned(),
                        }));
                    }
                    Ok((key.to_owned(), value.to_owned()))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Self {
            name: name.to_owned(),
            version,
            params,
        })
    }
}

impl fmt::Display for ModuleRef {
    /// The syntax [`FromStr`] parses: `NAME[@VERSION][:KEY=VALUE,...]`. It parses back to the
    /// same reference unless a value contains `,`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.versioned_name())?;
        for (i, (key, value)) in self.params.iter().enumerate() {
            let separator = if i == 0 { ':' } else { ',' };
            write!(f, "{separator}{key}={value}")?;
        }
        Ok(())
    }
}

impl From<ModuleRef> for v1::ModuleRef {
    fn from(module: ModuleRef) -> Self {
        Self {
            name: module.name,
            version: module.version,
            params: module
                .params
                .into_iter()
                .map(|(key, value)| v1::ModuleParam { key, value })
                .collect(),
        }
    }
}

impl From<v1::ModuleRef> for ModuleRef {
    fn from(module: v1::ModuleRef) -> Self {
        Self {
            name: module.name,
            version: module.version,
            params: module
                .params
                .into_iter()
                .map(|param| (param.key, param.value))
                .collect(),
        }
    }
}

/// Where a module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModulePath {
    /// On the partition leader, over every produce request, before anything is stored.
    Produce,
    /// Over fetched records, for each consumer.
    Consume,
}

/// The text given for a [`ModulePath`] is neither `produce` nor `consume`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid module path {input:?}: expected produce or consume")]
pub struct ParseModulePathError {
    /// The refused text.
    pub input: String,
}

impl FromStr for ModulePath {
    type Err = ParseModulePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "produce" => Ok(Self::Produce),
            "consume" => Ok(Self::Consume),
            _ => Err(ParseModulePathError {
                input: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for ModulePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Produce => "produce",
            Self::Consume => "consume",
        })
    }
}

impl From<ModulePath> for v1::ModulePath {
    fn from(path: ModulePath) -> Self {
        match path {
            ModulePath::Produce => Self::Produce,
            ModulePath::Consume => Self::Consume,
        }
    }
}

impl TryFrom<i32> for ModulePath {
    type Error = ClientError;

    /// Reads a wire `ModulePath`; an unspecified or unknown value is a broker bug.
    fn try_from(value: i32) -> Result<Self, Self::Error> {
        match v1::ModulePath::try_from(value) {
            Ok(v1::ModulePath::Produce) => Ok(Self::Produce),
            Ok(v1::ModulePath::Consume) => Ok(Self::Consume),
            _ => Err(ClientError::UnexpectedResponse(
                "a module use without a known path",
            )),
        }
    }
}

/// What happens to the records a produce-path module rejects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum RejectPolicy {
    /// The whole produce request fails with `RECORD_REJECTED` and nothing of it is stored; the
    /// error lists the rejected records ([`ClientError::rejected_records`]). The default, and
    /// the only policy of consume-path attachments.
    #[default]
    Reject,
    /// The rejected records are dropped; the rest are stored.
    Drop,
    /// The rejected records go to this topic, with headers naming the reason, module, topic and
    /// index; the rest are stored.
    DeadLetter(String),
}

impl RejectPolicy {
    /// What the broker does with a rejected record under this policy, without the topic.
    pub fn action(&self) -> RejectAction {
        match self {
            Self::Reject => RejectAction::Reject,
            Self::Drop => RejectAction::Drop,
            Self::DeadLetter(_) => RejectAction::DeadLetter,
        }
    }

    /// The wire policy and dead-letter topic.
    fn into_wire(self) -> (v1::RejectPolicy, String) {
        match self {
            Self::Reject => (v1::RejectPolicy::Reject, String::new()),
            Self::Drop => (v1::RejectPolicy::Drop, String::new()),
            Self::DeadLetter(topic) => (v1::RejectPolicy::DeadLetter, topic),
        }
    }

    /// Reads a wire policy. Unspecified is the proto's `REJECT`; a value newer than this client
    /// reads as `REJECT` too, the policy that stores nothing it was not asked to.
    fn from_wire(policy: i32, dead_letter_topic: String) -> Self {
        match v1::RejectPolicy::try_from(policy) {
            Ok(v1::RejectPolicy::Drop) => Self::Drop,
            Ok(v1::RejectPolicy::DeadLetter) => Self::DeadLetter(dead_letter_topic),
            Ok(v1::RejectPolicy::Reject | v1::RejectPolicy::Unspecified) | Err(_) => Self::Reject,
        }
    }
}

impl fmt::Display for RejectPolicy {
    /// `reject`, `drop` or `dead-letter to TOPIC`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reject => f.write_str("reject"),
            Self::Drop => f.write_str("drop"),
            Self::DeadLetter(topic) => write!(f, "dead-letter to {topic}"),
        }
    }
}

/// What the broker did with a record a produce-path module rejected: the [`RejectPolicy`] of
/// the attachment that rejected it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectAction {
    /// The request failed and nothing of it was stored.
    Reject,
    /// The record was dropped.
    Drop,
    /// The record went to the attachment's dead-letter topic.
    DeadLetter,
}

impl RejectAction {
    /// Reads a wire policy, as [`RejectPolicy`] does.
    pub(crate) fn from_wire(policy: i32) -> Self {
        RejectPolicy::from_wire(policy, String::new()).action()
    }
}

impl fmt::Display for RejectAction {
    /// `rejected`, `dropped` or `sent to the dead-letter topic`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reject => "rejected",
            Self::Drop => "dropped",
            Self::DeadLetter => "sent to the dead-letter topic",
        })
    }
}

/// A module attached to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleAttachment {
    /// The module, with the version it was attached at and its parameters.
    pub module: ModuleRef,
    /// The chain it is in.
    pub path: ModulePath,
    /// What happens to the records it rejects (always [`RejectPolicy::Reject`] on the consume
    /// path, where rejections are reported to the consumer).
    pub on_reject: RejectPolicy,
}

impl ModuleAttachment {
    /// Reads a wire attachment found in the chain of `path`: the list it is in says the path,
    /// whatever its own field says. An attachment without its module (a broker bug) reads as a
    /// module with an empty name rather than failing the whole topic description.
    pub(crate) fn from_wire(attachment: v1::ModuleAttachment, path: ModulePath) -> Self {
        Self {
            module: attachment
                .module
                .map(ModuleRef::from)
                .unwrap_or_else(|| ModuleRef::new("")),
            path,
            on_reject: RejectPolicy::from_wire(attachment.on_reject, attachment.dead_letter_topic),
        }
    }
}

/// The request that attaches `module` to `topic`.
pub(crate) fn attach_request(
    topic: String,
    module: ModuleRef,
    path: ModulePath,
    on_reject: RejectPolicy,
) -> v1::AttachModuleRequest {
    let (on_reject, dead_letter_topic) = on_reject.into_wire();
    v1::AttachModuleRequest {
        topic,
        module: Some(module.into()),
        path: v1::ModulePath::from(path).into(),
        on_reject: on_reject.into(),
        dead_letter_topic,
    }
}

/// A registered module: its versions and where it is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The module's name.
    pub name: String,
    /// Every registered version, oldest first.
    pub versions: Vec<ModuleVersionInfo>,
    /// Where the module is attached.
    pub attached: Vec<ModuleUse>,
}

impl ModuleInfo {
    /// The highest registered version; `None` when none is left.
    pub fn latest(&self) -> Option<u32> {
        self.versions.iter().map(|v| v.version).max()
    }
}

/// One registered version of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleVersionInfo {
    /// The version, from 1.
    pub version: u32,
    /// Hex SHA-256 of the registered bytes.
    pub sha256: String,
    /// Size of the registered bytes.
    pub size_bytes: u64,
    /// When it was registered, in milliseconds since the Unix epoch.
    pub registered_at_ms: i64,
    /// Its counters on the node that answered: each node counts the runs it made.
    pub stats: ModuleStats,
}

/// One node's counters of one module version, since that node started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModuleStats {
    /// Calls into the module (one per batch of records, not per record).
    pub invocations: u64,
    /// Records passed to the module.
    pub records_in: u64,
    /// Records the module returned.
    pub records_out: u64,
    /// Records the module rejected.
    pub records_rejected: u64,
    /// Calls that failed: traps, timeouts, memory exhaustion, malformed output.
    pub errors: u64,
    /// Time spent in the module's calls.
    pub busy: Duration,
    /// The node these counters are from.
    pub node_id: u64,
}

/// An attachment of a module, seen from the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleUse {
    /// The topic it is attached to.
    pub topic: String,
    /// The chain it is in.
    pub path: ModulePath,
    /// The version attached.
    pub version: u32,
}

impl TryFrom<v1::ModuleDescription> for ModuleInfo {
    type Error = ClientError;

    fn try_from(module: v1::ModuleDescription) -> Result<Self, Self::Error> {
        Ok(Self {
            name: module.name,
            versions: module
                .versions
                .into_iter()
                .map(ModuleVersionInfo::from)
                .collect(),
            attached: module
                .attached
                .into_iter()
                .map(|used| {
                    Ok(ModuleUse {
                        topic: used.topic,
                        path: ModulePath::try_from(used.path)?,
                        version: used.version,
                    })
                })
                .collect::<Result<_, ClientError>>()?,
        })
    }
}

impl From<v1::ModuleVersion> for ModuleVersionInfo {
    fn from(version: v1::ModuleVersion) -> Self {
        Self {
            version: version.version,
            sha256: version.sha256,
            size_bytes: version.size_bytes,
            registered_at_ms: version.registered_at_ms,
            stats: version.stats.map(ModuleStats::from).unwrap_or_default(),
        }
    }
}

impl From<v1::ModuleStats> for ModuleStats {
    fn from(stats: v1::ModuleStats) -> Self {
        Self {
            invocations: stats.invocations,
            records_in: stats.records_in,
            records_out: stats.records_out,
            records_rejected: stats.records_rejected,
            errors: stats.errors,
            busy: Duration::from_micros(stats.busy_us),
            node_id: stats.node_id,
        }
    }
}

/// A record a consume-path module rejected (a validator's verdict, or a map's error): it is not
/// among the records returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedOffset {
    /// The record's offset.
    pub offset: u64,
    /// Why, as the module said.
    pub reason: String,
    /// The module that rejected it, as `NAME@VERSION`.
    pub module: String,
}

impl From<v1::RejectedOffset> for RejectedOffset {
    fn from(rejected: v1::RejectedOffset) -> Self {
        Self {
            offset: rejected.offset,
            reason: rejected.reason,
            module: rejected.module,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Result<ModuleRef, ModuleRefProblem> {
        input.parse::<ModuleRef>().map_err(|err| {
            assert_eq!(err.input, input);
            err.problem
        })
    }

    #[test]
    fn module_refs_parse_name_version_and_ordered_params() {
        assert_eq!(parse("upper"), Ok(ModuleRef::new("upper")));
        assert_eq!(
            parse("upper@12"),
            Ok(ModuleRef::new("upper").with_version(12))
        );
        assert_eq!(
            parse("filter:field=type,equals=click"),
            Ok(ModuleRef::new("filter")
                .with_param("field", "type")
                .with_param("equals", "click"))
        );
        assert_eq!(
            parse("filter@3:z=1,a=2,z=3"),
            Ok(ModuleRef::new("filter")
                .with_version(3)
                .with_param("z", "1")
                .with_param("a", "2")
                .with_param("z", "3")),
            "order and repeats are kept"
        );
    }

    #[test]
    fn values_may_contain_equals_colons_and_at_signs_or_be_empty() {
        assert_eq!(
            parse("f:expr=a=b,empty=,url=http://h:1/x@y"),
            Ok(ModuleRef::new("f")
                .with_param("expr", "a=b")
                .with_param("empty", "")
                .with_param("url", "http://h:1/x@y"))
        );
    }

    #[test]
    fn bad_module_refs_say_what_is_wrong() {
        assert_eq!(parse(""), Err(ModuleRefProblem::EmptyName));
        assert_eq!(parse("@2"), Err(ModuleRefProblem::EmptyName));
        assert_eq!(parse(":k=v"), Err(ModuleRefProblem::EmptyName));
        for version in ["", "0", "x", "-1", "+1", "1.5", "4294967296"] {
            assert_eq!(
                parse(&format!("m@{version}")),
                Err(ModuleRefProblem::InvalidVersion {
                    version: version.to_owned()
                }),
                "{version:?}"
            );
        }
        assert_eq!(parse("m:"), Err(ModuleRefProblem::NoParams));
        assert_eq!(
            parse("m:a=1,,b=2"),
            Err(ModuleRefProblem::EmptyParam { position: 2 })
        );
        assert_eq!(
            parse("m:a=1,"),
            Err(ModuleRefProblem::EmptyParam { position: 2 })
        );
        assert_eq!(
            parse("m:a=1,flag"),
            Err(ModuleRefProblem::MissingEquals {
                param: "flag".to_owned()
            })
        );
        assert_eq!(
            parse("m:=1"),
            Err(ModuleRefProblem::EmptyKey {
                param: "=1".to_owned()
            })
        );
        assert_eq!(
            parse("field=type"),
            Err(ModuleRefProblem::NameHasSeparator {
                name: "field=type".to_owned(),
                found: '='
            })
        );
        assert_eq!(
            parse("a,b"),
            Err(ModuleRefProblem::NameHasSeparator {
                name: "a,b".to_owned(),
                found: ','
            })
        );
    }

    #[test]
    fn parse_errors_quote_the_input_and_the_syntax() {
        let err = "m@zero".parse::<ModuleRef>().expect_err("not a version");
        assert_eq!(
            err.to_string(),
            "invalid module reference \"m@zero\": version \"zero\" is not a number from 1 to \
             4294967295 (expected NAME[@VERSION][:KEY=VALUE,...])"
        );
    }

    #[test]
    fn display_round_trips_through_parsing() {
        for text in ["m", "m@1", "m:k=v", "m@7:a=1,b=x=y,c="] {
            let parsed: ModuleRef = text.parse().expect("valid");
            assert_eq!(parsed.to_string(), text);
        }
        let with_comma = ModuleRef::new("m").with_param("list", "a,b");
        assert_ne!(
            with_comma.to_string().parse::<ModuleRef>().ok(),
            Some(with_comma),
            "a ',' in a value cannot be written in this syntax"
        );
    }

    #[test]
    fn module_ref_converts_to_and_from_the_wire() {
        let module = ModuleRef::new("m").with_version(2).with_param("k", "v");
        let wire = v1::ModuleRef::from(module.clone());
        assert_eq!(wire.name, "m");
        assert_eq!(wire.version, Some(2));
        assert_eq!(
            (wire.params[0].key.as_str(), wire.params[0].value.as_str()),
            ("k", "v")
        );
        assert_eq!(ModuleRef::from(wire), module);
        assert_eq!(v1::ModuleRef::from(ModuleRef::new("m")).version, None);
    }

    #[test]
    fn module_paths_parse_and_display() {
        for path in [ModulePath::Produce, ModulePath::Consume] {
            assert_eq!(path.to_string().parse::<ModulePath>(), Ok(path));
        }
        assert_eq!("Consume".parse::<ModulePath>(), Ok(ModulePath::Consume));
        assert_eq!(
            "both".parse::<ModulePath>(),
            Err(ParseModulePathError {
                input: "both".to_owned()
            })
        );
        assert!(ModulePath::try_from(v1::ModulePath::Unspecified as i32).is_err());
        assert_eq!(
            ModulePath::try_from(v1::ModulePath::Produce as i32).ok(),
            Some(ModulePath::Produce)
        );
    }

    #[test]
    fn attach_request_carries_the_policy_and_dead_letter_topic() {
        let request = attach_request(
            "orders".to_owned(),
            ModuleRef::new("v").with_param("k", "v"),
            ModulePath::Produce,
            RejectPolicy::DeadLetter("orders-dlq".to_owned()),
        );
        assert_eq!(request.topic, "orders");
        assert_eq!(request.path, v1::ModulePath::Produce as i32);
        assert_eq!(request.on_reject, v1::RejectPolicy::DeadLetter as i32);
        assert_eq!(request.dead_letter_topic, "orders-dlq");
        assert_eq!(request.module.map(|m| m.params.len()), Some(1));

        let request = attach_request(
            "t".to_owned(),
            ModuleRef::new("f"),
            ModulePath::Consume,
            RejectPolicy::Reject,
        );
        assert_eq!(request.path, v1::ModulePath::Consume as i32);
        assert_eq!(request.on_reject, v1::RejectPolicy::Reject as i32);
        assert!(request.dead_letter_topic.is_empty());
    }

    #[test]
    fn wire_policies_read_back_with_unspecified_as_reject() {
        let read = |policy: v1::RejectPolicy, topic: &str| {
            RejectPolicy::from_wire(policy as i32, topic.to_owned())
        };
        assert_eq!(
            read(v1::RejectPolicy::Unspecified, ""),
            RejectPolicy::Reject
        );
        assert_eq!(read(v1::RejectPolicy::Reject, ""), RejectPolicy::Reject);
        assert_eq!(read(v1::RejectPolicy::Drop, ""), RejectPolicy::Drop);
        assert_eq!(
            read(v1::RejectPolicy::DeadLetter, "dlq"),
            RejectPolicy::DeadLetter("dlq".to_owned())
        );
        assert_eq!(
            RejectPolicy::from_wire(99, String::new()),
            RejectPolicy::Reject
        );
        assert_eq!(
            RejectAction::from_wire(v1::RejectPolicy::DeadLetter as i32),
            RejectAction::DeadLetter
        );
        assert_eq!(
            RejectPolicy::DeadLetter("dlq".to_owned()).to_string(),
            "dead-letter to dlq"
        );
    }

    #[test]
    fn module_description_converts_with_stats_and_uses() {
        let info = ModuleInfo::try_from(v1::ModuleDescription {
            name: "upper".to_owned(),
            versions: vec![
                v1::ModuleVersion {
                    version: 1,
                    sha256: "ab".to_owned(),
                    size_bytes: 10,
                    registered_at_ms: 5,
                    stats: None,
                },
                v1::ModuleVersion {
                    version: 2,
                    sha256: "cd".to_owned(),
                    size_bytes: 20,
                    registered_at_ms: 6,
                    stats: Some(v1::ModuleStats {
                        invocations: 3,
                        records_in: 30,
                        records_out: 20,
                        records_rejected: 10,
                        errors: 1,
                        busy_us: 1_500,
                        node_id: 2,
                    }),
                },
            ],
            attached: vec![v1::ModuleUse {
                topic: "orders".to_owned(),
                path: v1::ModulePath::Consume as i32,
                version: 2,
            }],
        })
        .expect("a well-formed description");
        assert_eq!(info.latest(), Some(2));
        assert_eq!(info.versions[0].stats, ModuleStats::default());
        let stats = info.versions[1].stats;
        assert_eq!(
            (stats.invocations, stats.records_in, stats.records_out),
            (3, 30, 20)
        );
        assert_eq!(
            (stats.records_rejected, stats.errors, stats.node_id),
            (10, 1, 2)
        );
        assert_eq!(stats.busy, Duration::from_micros(1_500));
        assert_eq!(
            info.attached,
            [ModuleUse {
                topic: "orders".to_owned(),
                path: ModulePath::Consume,
                version: 2
            }]
        );

        let no_path = v1::ModuleDescription {
            name: "m".to_owned(),
            versions: Vec::new(),
            attached: vec![v1::ModuleUse::default()],
        };
        assert!(matches!(
            ModuleInfo::try_from(no_path),
            Err(ClientError::UnexpectedResponse(_))
        ));
    }
}
