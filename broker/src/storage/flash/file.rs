//! A preallocated image file behaving as NOR flash: the default backend on
//! SD cards and eMMC.
//!
//! The file is created at its full size filled with 0xFF (erased), and the
//! file and its directory are fsynced so the image itself survives a power
//! cut. `sync()` is `fdatasync`: one per group commit. NOR rules are
//! enforced in debug builds by the log above, not re-checked here, so a
//! program is a single `pwrite`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use super::{Durable, BLOCK, WORD};

/// An I/O error of the image file, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum FileFlashError {
    #[error("{op} of {path} failed: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("access out of bounds or misaligned at offset {offset}")]
    Bounds { offset: u32 },
}

impl NorFlashError for FileFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FileFlashError::Bounds { .. } => NorFlashErrorKind::OutOfBounds,
            FileFlashError::Io { .. } => NorFlashErrorKind::Other,
        }
    }
}

pub struct FileFlash {
    file: File,
    path: PathBuf,
    capacity: usize,
    /// Reusable buffer of 0xFF for erases.
    erased: Vec<u8>,
}

impl FileFlash {
    /// Opens the image at `path`, creating it (erased, `capacity` bytes) if
    /// missing. An existing image keeps its size when it is at least
    /// `capacity`; a smaller one is grown with erased bytes.
    pub fn open(path: &Path, capacity: usize) -> Result<FileFlash, FileFlashError> {
        let io_err = |op: &'static str| {
            let path = path.to_path_buf();
            move |source| FileFlashError::Io { op, path, source }
        };
        let capacity = capacity - capacity % BLOCK;
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err("open"))?;
        let len = file.metadata().map_err(io_err("stat"))?.len() as usize;
        let flash = FileFlash {
            file,
            path: path.to_path_buf(),
            capacity: capacity.max(len - len % BLOCK),
            erased: vec![0xFF; BLOCK],
        };
        if len < capacity {
            // Fill the new part with erased blocks, then make file and
            // directory entry durable before anything is written into it.
            let mut offset = len - len % BLOCK;
            while offset < capacity {
                flash
                    .file
                    .write_all_at(&flash.erased, offset as u64)
                    .map_err(io_err("preallocate"))?;
                offset += BLOCK;
            }
            flash.file.sync_all().map_err(io_err("fsync"))?;
            if !existed {
                if let Some(dir) = path.parent() {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io_err("fsync directory"))?;
                }
            }
        }
        Ok(flash)
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<(), FileFlashError> {
        let end = offset as usize + len;
        if end > self.capacity || offset as usize % align != 0 || len % align != 0 {
            return Err(FileFlashError::Bounds { offset });
        }
        Ok(())
    }

    fn io(&self, op: &'static str) -> impl Fn(io::Error) -> FileFlashError + '_ {
        move |source| FileFlashError::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }
}

impl ErrorType for FileFlash {
    type Error = FileFlashError;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.check(offset, bytes.len(), 1)?;
        self.file
            .read_exact_at(bytes, u64::from(offset))
            .map_err(self.io("read"))
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = BLOCK;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.check(from, (to - from) as usize, BLOCK)?;
        let mut offset = from;
        while offset < to {
            self.file
                .write_all_at(&self.erased, u64::from(offset))
                .map_err(self.io("erase"))?;
            offset += BLOCK as u32;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.check(offset, bytes.len(), WORD)?;
        self.file
            .write_all_at(bytes, u64::from(offset))
            .map_err(self.io("write"))
    }
}

impl Durable for FileFlash {
    fn sync(&mut self) -> Result<(), Self::Error> {
        self.file.sync_data().map_err(self.io("fdatasync"))
    }
}
