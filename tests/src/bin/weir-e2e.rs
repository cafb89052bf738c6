//! The `weir` command line, built inside the test package so the integration tests can run it
//! as a real process (Cargo gives integration tests the paths of their own package's binaries
//! only). It is the same code as the `weir` binary: both are `weir_cli::main`, except that with
//! `WEIR_SIMULATED_DISK` set its databases live on a simulated disk (`weir_tests::disk`), and
//! with `WEIR_SERVE_UNCOMMITTED=1` it serves uncommitted records (`weir_tests::test_broker`).

fn main() -> std::process::ExitCode {
    if let Err(e) = weir_tests::test_broker::install_from_env() {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    weir_cli::main()
}
