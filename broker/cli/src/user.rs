//! `weir user`: create, list and delete users, and change their passwords. Passwords come from
//! stdin or a prompt (never a flag); the credential is derived here, so no password reaches the
//! broker.

use anyhow::Context;
use clap::Subcommand;
use weir_client::Client;

use crate::{password, table};

/// A user command.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from stdin, or prompted for twice on a terminal.
    Create {
        /// The user's name (the principal is User:NAME).
        name: String,
    },
    /// List the users.
    List,
    /// Delete a user (its ACL bindings stay).
    Delete {
        /// The user's name.
        name: String,
    },
    /// Change a user's password, read as for `create`.
    SetPassword {
        /// The user's name.
        name: String,
    },
}

impl UserCommand {
    /// Runs the command against `client`.
    pub async fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            Self::Create { name } => {
                let password = password::new_password(&name)?;
                client
                    .create_user(&name, &password)
                    .await
                    .with_context(|| format!("cannot create user '{name}'"))?;
                println!("created user {name}");
            }
            Self::List => {
                let users = client.list_users().await.context("cannot list users")?;
                let rows: Vec<[String; 3]> = users
                    .into_iter()
                    .map(|u| [u.name, u.mechanism, u.iterations.to_string()])
                    .collect();
                print!(
                    "{}",
                    table::render(["NAME", "MECHANISM", "ITERATIONS"], &rows)
                );
            }
            Self::Delete { name } => {
                client
                    .delete_user(&name)
                    .await
                    .with_context(|| format!("cannot delete user '{name}'"))?;
                println!("deleted user {name}");
            }
            Self::SetPassword { name } => {
                let password = password::new_password(&name)?;
                client
                    .set_user_password(&name, &password)
                    .await
                    .with_context(|| format!("cannot change the password of user '{name}'"))?;
                println!("changed the password of user {name}");
            }
        }
        Ok(())
    }
}
