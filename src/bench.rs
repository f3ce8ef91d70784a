//! `bengkel-whatsapp bench`: measured against a real PostgreSQL and a zero-latency fake gateway.

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub async fn run(_config: Config, _args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("the benchmark is being written")
}
