//! `keelson bench`: measurements side by side with etcd. See docs/performance.md.

use clap::Args;

/// Flags of `keelson bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {}

/// Runs the benchmarks.
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
