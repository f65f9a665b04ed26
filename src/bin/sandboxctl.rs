//! `sandboxctl`: the client CLI over the generated gRPC client.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sandboxd::ctl::main().await
}
