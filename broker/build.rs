//! Build script: the commented default configuration
//! (`config/default.toml`, printed by `edgemq --print-default-config`) is
//! embedded deflate-compressed: it is 17 KB of text, and the stripped
//! gateway binary has a 4 MiB budget (docs/ARM.md). The broker decompresses
//! it with the flate2 it already links for bridge envelopes.

use std::io::Write;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=config/default.toml");
    let text = match std::fs::read("config/default.toml") {
        Ok(t) => t,
        Err(e) => panic!("cannot read config/default.toml: {e}"),
    };
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let compressed = encoder
        .write_all(&text)
        .and_then(|()| encoder.finish())
        .unwrap_or_else(|e| panic!("cannot compress the default config: {e}"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    if let Err(e) = std::fs::write(out.join("default.toml.deflate"), compressed) {
        panic!("cannot write the compressed default config: {e}");
    }
}
