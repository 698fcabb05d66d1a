//! The `licsync-dp` binary; everything lives in the library (see [`licsync_dp::cli`]).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    licsync_dp::cli::main()
}
