//! `weir acl`: create, list and delete ACL bindings, with `kafka-acls`' and `rpk acl`'s flags.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use weir_client::{
    AclBinding, AclFilter, AclOperation, AclPermission, CLUSTER_RESOURCE, Client, PatternType,
    ResourceType,
};

use crate::table;

/// An ACL command.
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Add bindings: one per --operation.
    Create(BindingArgs),
    /// List bindings, narrowed by the flags given.
    List(FilterArgs),
    /// Remove the bindings the flags describe exactly (as they were created).
    Delete(BindingArgs),
}

/// The resource a binding is about: exactly one of these.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct ResourceArgs {
    /// A topic (or, with --prefixed, every topic starting with it; `*` for every topic).
    #[arg(long, value_name = "NAME")]
    topic: Option<String>,
    /// A consumer group.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// A WebAssembly module.
    #[arg(long, value_name = "NAME")]
    module: Option<String>,
    /// The cluster (users, ACLs, nodes, creating topics).
    #[arg(long)]
    cluster: bool,
}

impl ResourceArgs {
    fn resource(&self) -> Option<(ResourceType, String)> {
        let named = |kind, name: &Option<String>| name.clone().map(|n| (kind, n));
        named(ResourceType::Topic, &self.topic)
            .or_else(|| named(ResourceType::Group, &self.group))
            .or_else(|| named(ResourceType::Module, &self.module))
            .or_else(|| {
                self.cluster
                    .then(|| (ResourceType::Cluster, CLUSTER_RESOURCE.to_owned()))
            })
    }
}

/// A binding (or, with several --operation, bindings).
#[derive(Debug, Args)]
pub struct BindingArgs {
    /// Allow the operations.
    #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
    allow: bool,
    /// Deny the operations; a deny wins over every allow.
    #[arg(long)]
    deny: bool,
    /// Who: User:NAME, or User:* for every authenticated user.
    #[arg(long, value_name = "PRINCIPAL")]
    principal: String,
    /// What: all, read, write, create, delete, alter, describe, describe-configs,
    /// alter-configs. Repeat for several.
    #[arg(long, value_name = "OPERATION", required = true)]
    operation: Vec<AclOperation>,
    #[command(flatten)]
    resource: ResourceArgs,
    /// The resource name is a prefix.
    #[arg(long)]
    prefixed: bool,
}

impl BindingArgs {
    fn bindings(&self) -> anyhow::Result<Vec<AclBinding>> {
        let Some((resource_type, resource_name)) = self.resource.resource() else {
            bail!("name a resource: --topic, --group, --module or --cluster");
        };
        let permission = if self.deny {
            AclPermission::Deny
        } else {
            AclPermission::Allow
        };
        let pattern_type = if self.prefixed {
            PatternType::Prefixed
        } else {
            PatternType::Literal
        };
        Ok(self
            .operation
            .iter()
            .map(|&operation| AclBinding {
                principal: self.principal.clone(),
                resource_type,
                resource_name: resource_name.clone(),
                pattern_type,
                operation,
                permission,
            })
            .collect())
    }
}

/// Narrows `weir acl list`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only this principal's bindings.
    #[arg(long, value_name = "PRINCIPAL")]
    principal: Option<String>,
    #[command(flatten)]
    resource: ResourceArgs,
}

impl AclCommand {
    /// Runs the command against `client`.
    pub async fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            Self::Create(args) => {
                let bindings = args.bindings()?;
                client
                    .create_acls(&bindings)
                    .await
                    .context("cannot create the ACL bindings")?;
                println!("created {} ACL binding(s)", bindings.len());
            }
            Self::Delete(args) => {
                let bindings = args.bindings()?;
                let deleted = client
                    .delete_acls(&bindings)
                    .await
                    .context("cannot delete the ACL bindings")?;
                println!("deleted {deleted} ACL binding(s)");
            }
            Self::List(args) => {
                let (resource_type, resource_name) = match args.resource.resource() {
                    Some((kind, name)) => (Some(kind), Some(name)),
                    None => (None, None),
                };
                let filter = AclFilter {
                    principal: args.principal,
                    resource_type,
                    resource_name,
                };
                let bindings = client
                    .list_acls(&filter)
                    .await
                    .context("cannot list the ACL bindings")?;
                print!("{}", render(&bindings));
            }
        }
        Ok(())
    }
}

fn render(bindings: &[AclBinding]) -> String {
    let rows: Vec<[String; 6]> = bindings
        .iter()
        .map(|b| {
            [
                b.principal.clone(),
                b.resource_type.to_string(),
                b.resource_name.clone(),
                b.pattern_type.to_string(),
                b.operation.to_string(),
                b.permission.to_string(),
            ]
        })
        .collect();
    table::render(
        [
            "PRINCIPAL",
            "RESOURCE",
            "NAME",
            "PATTERN",
            "OPERATION",
            "PERMISSION",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: AclCommand,
    }

    #[test]
    fn create_makes_one_binding_per_operation() {
        let parsed = Wrapper::try_parse_from([
            "acl",
            "create",
            "--deny",
            "--principal",
            "User:bob",
            "--operation",
            "read",
            "--operation",
            "write",
            "--topic",
            "orders-",
            "--prefixed",
        ])
        .unwrap();
        let AclCommand::Create(args) = parsed.command else {
            panic!("not create");
        };
        let bindings = args.bindings().unwrap();
        assert_eq!(bindings.len(), 2);
        assert_eq!(bindings[1].operation, AclOperation::Write);
        assert_eq!(bindings[0].permission, AclPermission::Deny);
        assert_eq!(bindings[0].pattern_type, PatternType::Prefixed);
        assert_eq!(bindings[0].resource_name, "orders-");
    }

    #[test]
    fn a_binding_needs_one_resource_and_allow_or_deny() {
        let two = Wrapper::try_parse_from([
            "acl",
            "create",
            "--allow",
            "--principal",
            "User:a",
            "--operation",
            "read",
            "--topic",
            "t",
            "--group",
            "g",
        ]);
        assert!(two.is_err());
        let neither = Wrapper::try_parse_from([
            "acl",
            "create",
            "--principal",
            "User:a",
            "--operation",
            "read",
            "--topic",
            "t",
        ]);
        assert!(neither.unwrap_err().to_string().contains("--allow"));
        let parsed = Wrapper::try_parse_from([
            "acl",
            "create",
            "--allow",
            "--principal",
            "User:a",
            "--operation",
            "read",
        ])
        .unwrap();
        let AclCommand::Create(args) = parsed.command else {
            panic!("not create");
        };
        assert!(args.bindings().unwrap_err().to_string().contains("--topic"));
    }
}
