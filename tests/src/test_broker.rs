//! What the test brokers (`weir-e2e`, `nemesis broker`) build in when their environment asks:
//! the simulated disk ([`crate::disk::ENV`]), and a broker that serves uncommitted records
//! ([`SERVE_UNCOMMITTED_ENV`]), which the nemesis's checker must catch.

/// The environment variable (`1`) that makes a test broker serve records past the high
/// watermark (`weir_server::fault_injection::serve_uncommitted_records`).
pub const SERVE_UNCOMMITTED_ENV: &str = "WEIR_SERVE_UNCOMMITTED";

/// Installs what the environment asks for; call before the broker starts. Fails on a value
/// it does not know.
pub fn install_from_env() -> Result<(), String> {
    crate::disk::install_from_env()?;
    match std::env::var(SERVE_UNCOMMITTED_ENV).as_deref() {
        Err(_) | Ok("0") => {}
        Ok("1") => weir_server::fault_injection::serve_uncommitted_records(),
        Ok(other) => {
            return Err(format!(
                "{SERVE_UNCOMMITTED_ENV}={other:?}: expected 0 or 1"
            ));
        }
    }
    Ok(())
}
