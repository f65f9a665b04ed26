//! The `sandboxd` binary: parses arguments and hands over to the library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sandboxd::cli::main().await
}
