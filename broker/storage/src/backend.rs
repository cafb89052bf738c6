//! What a log database is stored on: a file through redb's own file backend, unless the process
//! installed another way to create databases first.
//!
//! The test brokers install a simulated disk (`weir_tests::disk`) that can lose unsynced writes
//! on a simulated power loss and make fsync fail, so the nemesis can run those faults against
//! real broker processes (docs/reliability.md). The `weir` binary installs nothing.

use std::path::Path;
use std::sync::OnceLock;

use redb::{Builder, Database, DatabaseError};

/// Creates (or opens) the database at a path with the given builder's settings, typically
/// through [`Builder::create_with_backend`].
pub type CreateDatabase = fn(&Builder, &Path) -> Result<Database, DatabaseError>;

static CREATE: OnceLock<CreateDatabase> = OnceLock::new();

/// Makes every log database this process opens from now on be created by `create`. Returns
/// `false` (and changes nothing) if one was installed already.
pub fn install_database_backend(create: CreateDatabase) -> bool {
    CREATE.set(create).is_ok()
}

/// Creates the database at `path` the installed way, or as a plain file.
pub(crate) fn create(builder: &Builder, path: &Path) -> Result<Database, DatabaseError> {
    match CREATE.get() {
        Some(create) => create(builder, path),
        None => builder.create(path),
    }
}
