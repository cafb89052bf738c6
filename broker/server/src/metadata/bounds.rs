//! The bounds every controller command is checked against where it applies.
//!
//! A command reaches the controller's log from a client request, from a peer forwarding one, or
//! from anything that can speak the peer protocol. Whatever its source, applying it must not be
//! able to stop the cluster: a topic of four billion partitions would be replicated and then make
//! every node run out of memory on every start, for good. So apply checks each command against
//! these bounds, and a command outside them is refused and changes nothing.
//!
//! They are constants, not settings: every replica must refuse exactly the same commands, whatever
//! its configuration says. The client-facing limits in the broker's configuration
//! (`limits.max_partitions_per_topic`, `modules.max_module_bytes`) are policy within them, and a
//! configuration above them is refused at start-up.

use super::model::Attachment;

/// Most partitions one topic may have.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 65_536;
/// Most partitions the whole cluster may have.
pub const MAX_PARTITIONS: usize = 262_144;
/// Most nodes a cluster may have.
pub const MAX_NODES: usize = 1_024;
/// Most warnings a node registers, and the longest one in bytes.
pub const MAX_NODE_WARNINGS: (usize, usize) = (8, 1024);
/// Most users the cluster holds.
pub const MAX_USERS: usize = 10_000;
/// Most ACL bindings the cluster holds.
pub const MAX_ACLS: usize = 10_000;
/// Longest node address (`host:port`) and cluster id.
pub const MAX_ADDRESS_BYTES: usize = 255;
/// Largest module, in bytes.
pub const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;
/// Most bytes all registered module versions together may hold. Every node keeps them in
/// memory, and a joining node receives them in one controller snapshot, base64-encoded (4/3),
/// within the peer message limit of 512 MiB.
pub const MAX_STORED_MODULE_BYTES: usize = 256 * 1024 * 1024;
/// Longest module name.
pub const MAX_MODULE_NAME: usize = 128;
/// Most modules in one chain.
pub const MAX_CHAIN_STAGES: usize = 16;
/// Most parameters of one attached module, and the longest name or value of one.
pub const MAX_PARAMS: usize = 64;
/// Longest parameter name or value, in bytes.
pub const MAX_PARAM_BYTES: usize = 4096;
/// Longest committed offset's metadata, in bytes (Kafka's `offset.metadata.max.bytes`).
pub const MAX_COMMIT_METADATA: usize = 4096;
/// Largest encoded command: the largest module, base64-encoded, and room for the rest.
pub const MAX_COMMAND_BYTES: usize = MAX_MODULE_BYTES / 3 * 4 + 1024 * 1024;

/// Checks a module name: 1 to [`MAX_MODULE_NAME`] of `[A-Za-z0-9._-]`, starting with a letter
/// or digit.
pub fn check_module_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_MODULE_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid module name '{}': use 1 to {MAX_MODULE_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit",
            name.escape_debug()
        ))
    }
}

/// Checks a module's parameters: named, at most [`MAX_PARAMS`], each name and value at most
/// [`MAX_PARAM_BYTES`].
pub fn check_params(module: &str, params: &[(String, String)]) -> Result<(), String> {
    if params.len() > MAX_PARAMS {
        return Err(format!(
            "module '{module}': {} parameters given; the limit is {MAX_PARAMS}",
            params.len()
        ));
    }
    for (key, value) in params {
        if key.is_empty() {
            return Err(format!("module '{module}': a parameter has an empty name"));
        }
        if key.len() > MAX_PARAM_BYTES || value.len() > MAX_PARAM_BYTES {
            return Err(format!(
                "module '{module}': parameter '{}' is longer than {MAX_PARAM_BYTES} bytes",
                truncated(key)
            ));
        }
    }
    Ok(())
}

/// Checks an attachment's module name and parameters.
pub fn check_attachment(attachment: &Attachment) -> Result<(), String> {
    check_module_name(&attachment.module)?;
    check_params(&attachment.module, &attachment.params)
}

/// Checks a node address or cluster id: not empty, at most [`MAX_ADDRESS_BYTES`].
pub fn check_address(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_ADDRESS_BYTES {
        return Err(format!(
            "{what} must be 1 to {MAX_ADDRESS_BYTES} bytes long; it is {}",
            value.len()
        ));
    }
    Ok(())
}

/// The start of `s`, for naming a bad value in an error without echoing all of it.
pub(super) fn truncated(s: &str) -> String {
    const SHOWN: usize = 64;
    match s.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", s[..end].escape_debug()),
        None => s.escape_debug().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_checked() {
        for good in ["a", "filter-2", "x.y_z", &"m".repeat(MAX_MODULE_NAME)] {
            assert_eq!(check_module_name(good), Ok(()), "{good:?} refused");
        }
        for bad in ["", "-a", "a b", "é", &"m".repeat(MAX_MODULE_NAME + 1)] {
            assert!(check_module_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn params_are_bounded() {
        let one = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert_eq!(check_params("m", &one("k", "v")), Ok(()));
        assert!(
            check_params("m", &one("", "v"))
                .unwrap_err()
                .contains("empty name")
        );
        let long = "v".repeat(MAX_PARAM_BYTES + 1);
        let err = check_params("m", &one("k", &long)).unwrap_err();
        assert!(err.contains("parameter 'k'"), "{err}");
        let many: Vec<_> = (0..=MAX_PARAMS)
            .map(|i| (i.to_string(), String::new()))
            .collect();
        assert!(
            check_params("m", &many)
                .unwrap_err()
                .contains("65 parameters")
        );
    }

    #[test]
    fn the_command_bound_fits_the_largest_module() {
        // base64 of MAX_MODULE_BYTES, rounded up to whole groups of 4.
        assert!(MAX_COMMAND_BYTES > MAX_MODULE_BYTES.div_ceil(3) * 4);
    }
}
