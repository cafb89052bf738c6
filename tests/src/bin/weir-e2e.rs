//! The `weir` command line, built inside the test package so the integration tests can run it
//! as a real process (Cargo gives integration tests the paths of their own package's binaries
//! only). It is the same code as the `weir` binary: both are `weir_cli::main`.

fn main() -> std::process::ExitCode {
    weir_cli::main()
}
