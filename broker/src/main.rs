//! The `edgemq` binary (work in progress: the broker core lands next).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("edgemq: the broker core is not built yet")
}
