//! The data directory: created, locked and fsynced before the image is
//! opened (M4).
//!
//! Invariants: one edgemq process per data directory (an exclusive
//! `flock` on `dir/lock`, held for the life of the process and released by
//! the kernel when it exits, even after kill -9); the directory entry of
//! the image and of the directory itself are durable on every open, not
//! only when they are created; an existing image whose size differs from
//! `capacity` is refused before anything is written to it.

use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use super::StoreError;

/// Creates `dir` if needed, locks it and fsyncs it and its parent. The
/// returned file holds the lock.
pub(super) fn prepare(dir: &Path) -> Result<File, StoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::Config(format!("cannot open {}: {e}", path.display())))?;
    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        return Err(StoreError::Config(format!(
            "the data directory {} is in use by another edgemq process (lock on {}: {e}); \
             stop it or give this one another storage.dir / --data-dir",
            dir.display(),
            path.display()
        )));
    }
    sync_dir(dir)?;
    Ok(file)
}

/// Fsyncs `dir` and its parent (the entries of the image and of `dir`).
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for d in [dir, parent] {
        File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::Flash(format!("fsync of directory {}: {e}", d.display())))?;
    }
    Ok(())
}

/// Refuses an existing image whose size is not `capacity` (rounded down to
/// whole 4 KiB blocks) when it holds data: it was written with another
/// `capacity` (D4). An image without any segment header (a first start
/// killed while preallocating) is resized instead.
pub(super) fn check_capacity(image: &Path, capacity: u64) -> Result<(), StoreError> {
    let Ok(meta) = std::fs::metadata(image) else {
        return Ok(());
    };
    let want = capacity - capacity % 4096;
    if meta.len() == want {
        return Ok(());
    }
    let io = |e: std::io::Error| StoreError::Flash(format!("{}: {e}", image.display()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io)?;
    if holds_segments(&file, meta.len()).map_err(io)? {
        return Err(StoreError::Config(format!(
            "storage.capacity = {capacity} but {} holds {} bytes (written with capacity = {}); \
             set capacity = {} again, or move the image away to start empty",
            image.display(),
            meta.len(),
            meta.len(),
            meta.len()
        )));
    }
    if meta.len() > want {
        file.set_len(want).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    Ok(())
}

/// True when any 4 KiB block of the image starts with a segment magic.
fn holds_segments(file: &File, len: u64) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 4];
    let mut off = 0u64;
    while off + 4 <= len {
        file.read_exact_at(&mut magic, off)?;
        if &magic == b"EMQS" {
            return Ok(true);
        }
        off += 4096;
    }
    Ok(false)
}
