//! `wear.counts`: the erase count of every segment, kept beside the image.
//!
//! A segment in use carries its erase count in its header, but a free
//! (erased) segment has no header, so its count used to restart at 0 after
//! every restart. The store thread writes this file after a commit that
//! followed new erases (once per segment erase at most, so a few hundred
//! bytes per MiB of log) and `StoreHandle::open` takes the larger of the
//! header's and the file's count for each segment.
//!
//! Invariants:
//! - The file is a statistic, never needed for recovery: a missing,
//!   short, oversized or garbled file (or one for another geometry) is
//!   ignored with a warning; nothing here can stop the store from opening.
//! - It is replaced by rename, so a crash leaves the old or the new file
//!   (or, without a directory sync, none: counts are then those of the
//!   headers, as before).

use std::io::Read;
use std::path::{Path, PathBuf};

const MAGIC: &str = "edgemq-erase-counts 1";
/// Far more than any valid file (65536 segments of 10 digits).
const MAX_LEN: u64 = 1 << 20;

/// Path of the counts file in a data directory.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("wear.counts")
}

/// The counts of `segments` segments, if the file holds exactly those.
pub fn load(path: &Path, segments: usize) -> Option<Vec<u32>> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    if let Err(e) = file.take(MAX_LEN).read_to_string(&mut text) {
        tracing::warn!(path = %path.display(), error = %e, "erase counts ignored");
        return None;
    }
    let parsed = parse(&text, segments);
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "erase counts file not understood: ignored");
    }
    parsed
}

fn parse(text: &str, segments: usize) -> Option<Vec<u32>> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let counts = lines
        .next()?
        .split_ascii_whitespace()
        .map(|w| w.parse::<u32>().ok())
        .collect::<Option<Vec<u32>>>()?;
    (counts.len() == segments).then_some(counts)
}

/// Writes `counts` (temporary file, then rename).
pub fn save(path: &Path, counts: &[u32]) -> std::io::Result<()> {
    let mut text = String::with_capacity(MAGIC.len() + 2 + counts.len() * 4);
    text.push_str(MAGIC);
    text.push('\n');
    let words: Vec<String> = counts.iter().map(u32::to_string).collect();
    text.push_str(&words.join(" "));
    text.push('\n');
    let tmp = path.with_extension("counts.tmp");
    std::fs::write(&tmp, text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn garbage_and_other_geometries_are_ignored() {
        assert_eq!(
            parse("edgemq-erase-counts 1\n1 2 3\n", 3),
            Some(vec![1, 2, 3])
        );
        assert_eq!(parse("edgemq-erase-counts 1\n1 2 3\n", 4), None);
        assert_eq!(parse("edgemq-erase-counts 1\n1 x 3\n", 3), None);
        assert_eq!(parse("edgemq-erase-counts 1\n1 99999999999 3\n", 3), None);
        assert_eq!(parse("", 0), None);
        assert_eq!(parse("something else\n1\n", 1), None);
    }

    #[test]
    fn a_saved_file_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        assert_eq!(load(&p, 2), None);
        save(&p, &[4, 0]).unwrap();
        assert_eq!(load(&p, 2), Some(vec![4, 0]));
    }
}
