//! Generates the gRPC server and client code and the descriptor set served by reflection.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// The built web app (`npm --prefix clients/web run build`), embedded by `src/web/assets.rs`.
const WEB_DIST: &str = "clients/web/dist";

/// Served at `/ui` when the web app was not built, so a build without Node still works.
const PLACEHOLDER_PAGE: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>sandboxd dashboard not built</title></head>
<body><h1>The sandboxd dashboard was not built into this binary</h1>
<p>Build the web app, then build sandboxd again:</p>
<pre>npm --prefix clients/web ci &amp;&amp; npm --prefix clients/web run build
cargo build</pre>
<p>The gRPC-Web API on this listener works without it.</p></body></html>
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build free of a system protobuf-compiler package.
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/sandboxd/v1/sandbox.proto",
        "proto/sandboxd/v1/routing.proto",
        "proto/sandboxd/v1/sync.proto",
        "proto/sandboxd/v1/artifact.proto",
    ];
    tonic_prost_build::configure()
        // Prost's codec with decode errors mapped to INVALID_ARGUMENT (src/wire/codec.rs).
        .codec_path("crate::wire::codec::Codec")
        .file_descriptor_set_path(out_dir.join("sandboxd_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    embed_web_app(&out_dir)?;
    Ok(())
}

/// Writes `dashboard_assets.rs`: an `include_bytes!` table of every file of the built web app
/// (sorted by path, for binary search), or of the placeholder page when it was not built.
fn embed_web_app(out_dir: &Path) -> io::Result<()> {
    let dist = Path::new(WEB_DIST);
    let mut files = Vec::new();
    let built = dist.join("index.html").is_file();
    if built {
        collect_files(dist, dist, &mut files)?;
        println!("cargo:rerun-if-changed={WEB_DIST}");
    } else {
        let placeholder = out_dir.join("dashboard_placeholder.html");
        fs::write(&placeholder, PLACEHOLDER_PAGE)?;
        files.push(("index.html".to_string(), placeholder));
        // Reruns when `dist` appears.
        println!("cargo:rerun-if-changed=clients/web");
    }
    files.sort();
    let mut table = String::from("static ASSETS: &[(&str, &[u8])] = &[\n");
    for (name, path) in files {
        let path = path.canonicalize()?;
        table.push_str(&format!("    ({name:?}, include_bytes!({path:?})),\n"));
    }
    table.push_str(&format!("];\nconst BUILT: bool = {built};\n"));
    fs::write(out_dir.join("dashboard_assets.rs"), table)
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(root, &path, files)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let name = relative.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
            files.push((name, path));
        }
    }
    Ok(())
}
