//! firmware-sim: simulated sensor fleets (work in progress).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("firmware-sim is not built yet")
}
