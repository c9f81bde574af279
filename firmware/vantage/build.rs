//! Gzips the page's files from `web/` at build time. The daemon embeds the compressed bytes (a
//! third of the text's size, in the binary and on the wire) and sends them as they are to every
//! browser, since all of them take gzip; the rare client that does not gets them inflated.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

/// The files of `web/` the page is made of (`web/assets.rs` serves them).
const ASSETS: [&str; 4] = ["index.html", "app.js", "app.css", "icon.svg"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    for name in ASSETS {
        let src = web.join(name);
        println!("cargo:rerun-if-changed={}", src.display());
        let text = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        // No file name and a zero time in the header: the same input gives the same bytes.
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&text).expect("gzip into memory");
        let dst = out.join(format!("{name}.gz"));
        std::fs::write(&dst, gz.finish().expect("gzip into memory"))
            .unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
    }
}
