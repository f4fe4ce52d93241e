//! `chat-bench`: load generator for the chat service and gateway.
//! See `chat-bench --help` and BENCHMARKS.md.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = chat_bench::Cli::parse();
    chat_bench::run(cli).await?;
    Ok(())
}
