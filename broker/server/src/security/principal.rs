//! Who is calling.

use std::fmt;

/// The authenticated identity of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// No credentials and no client certificate.
    Anonymous,
    /// A user: by password, or by the subject CN of a client certificate.
    User(String),
    /// Another node of the cluster: its certificate's subject CN is `node`, or it showed the
    /// cluster secret. Nodes may do anything; they call the client API only for requests a
    /// node already authorized (group requests forwarded to the coordinator, dead letters).
    Node,
}

impl Principal {
    /// How a binding names the anonymous caller.
    pub const ANONYMOUS: &'static str = "User:ANONYMOUS";
    /// The certificate subject CN that marks a node (CockroachDB's convention); no user may
    /// take the name.
    pub const NODE_CN: &'static str = "node";
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Anonymous => f.write_str(Self::ANONYMOUS),
            Principal::User(name) => write!(f, "User:{name}"),
            Principal::Node => f.write_str("Node"),
        }
    }
}

/// Checks a user name: 1 to 255 bytes, printable, no `:` (it would be ambiguous in a
/// principal) and not a reserved name.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!(
            "invalid user name {name:?}: must be 1 to 255 bytes"
        ));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == ':')
    {
        return Err(format!(
            "invalid user name {name:?}: no spaces, control characters or ':'"
        ));
    }
    if name == "*" || name == "ANONYMOUS" || name == Principal::NODE_CN {
        return Err(format!("invalid user name {name:?}: the name is reserved"));
    }
    Ok(())
}
