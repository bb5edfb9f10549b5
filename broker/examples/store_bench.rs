//! Figures of the durable store on this machine's disk (issue 3):
//! durable appends per second in `sync` mode with many concurrent appenders
//! (group commit), messages per sync, write amplification in steady state
//! (append + ack), erase-count spread after a long run, and the recovery
//! time of a full 64 MiB image.
//!
//! Run: `cargo run --release -p edgemq --example store_bench [-- DIR]`
//! (DIR defaults to a temporary directory on the current file system).

use std::time::Instant;

use bytes::Bytes;
use edgemq::storage::flash::FileFlash;
use edgemq::storage::{Overflow, StorageConfig, Store, StoreHandle, StoredMessage};

const APPENDERS: usize = 64;

fn message(payload: usize) -> StoredMessage {
    StoredMessage {
        topic: "site/line-1/sensor-17/temp".into(),
        qos: 1,
        payload: Bytes::from(vec![0x5A; payload]),
        ..Default::default()
    }
}

/// Durable appends/s with `APPENDERS` concurrent publishers; acks follow so
/// the store reaches a steady state and reclaims segments.
async fn throughput(config: &StorageConfig, payload: usize, total: usize) -> anyhow::Result<()> {
    let (handle, _) = StoreHandle::open(config)?;
    let before = handle.stats();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..APPENDERS {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            let dest = vec![format!("session/sub-{}", a % 4)];
            for _ in 0..total / APPENDERS {
                let id = h.append(message(payload), dest.clone()).await?;
                h.ack(id, dest[0].clone()).await?;
            }
            Ok::<_, edgemq::storage::StoreError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    handle.flush().await?;
    let secs = started.elapsed().as_secs_f64();
    let s = handle.stats();
    let appended = s.appended - before.appended;
    let syncs = (s.syncs - before.syncs).max(1);
    println!(
        "| {payload} B | {:.0} msg/s | {:.1} | {:.2} |",
        appended as f64 / secs,
        appended as f64 / syncs as f64,
        s.write_amplification()
    );
    let min = s.erase_counts.iter().min().copied().unwrap_or(0);
    let max = s.erase_counts.iter().max().copied().unwrap_or(0);
    println!(
        "  erase counts over {} segments: min {min}, max {max}",
        s.erase_counts.len()
    );
    Ok(())
}

/// Fills a 64 MiB image with live messages, then times its recovery.
fn recovery(config: &StorageConfig) -> anyhow::Result<()> {
    let path = config.dir.join("recovery.img");
    let _ = std::fs::remove_file(&path);
    let flash = FileFlash::open(&path, config.capacity as usize)?;
    let (mut store, _) = Store::open(flash, config.segment_size as usize, Overflow::Reject)?;
    let dest = vec!["session/offline".to_string()];
    let mut n = 0u64;
    while store.append(message(64), &dest).is_ok() {
        n += 1;
        if n % 10_000 == 0 {
            store.commit()?;
        }
    }
    store.commit()?;
    drop(store);
    let started = Instant::now();
    let flash = FileFlash::open(&path, config.capacity as usize)?;
    let (_, report) = Store::open(flash, config.segment_size as usize, Overflow::Reject)?;
    println!(
        "recovery of a full {} MiB image: {} messages, {} records, {:.2} s",
        config.capacity >> 20,
        report.messages,
        report.records,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir_in(".")?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);
    let config = StorageConfig {
        dir,
        ..StorageConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "durability = sync, {APPENDERS} concurrent appenders, each message acked after its append"
    );
    println!("| payload | durable appends | messages per sync | write amplification |");
    println!("|---|---|---|---|");
    rt.block_on(throughput(&config, 64, 200_000))?;
    let _ = std::fs::remove_file(config.dir.join("store.img"));
    rt.block_on(throughput(&config, 1024, 100_000))?;
    recovery(&config)?;
    Ok(())
}
