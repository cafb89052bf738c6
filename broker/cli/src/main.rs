//! The `weir` binary: see the `weir_cli` library for the commands.

fn main() -> std::process::ExitCode {
    weir_cli::main()
}
