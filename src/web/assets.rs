//! The web app's files, embedded in the binary by `build.rs` from `clients/web/dist` (or, when
//! that was not built, a placeholder page saying how to build it), and the headers each is
//! served with.

// `ASSETS` (sorted by path, relative to `dist/`) and `BUILT` (false: the placeholder).
include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

/// Whether the real web app is embedded (false: only the placeholder page).
pub fn web_app_built() -> bool {
    BUILT
}

/// Where the web app lives; every other path is left to the gRPC-Web services.
pub const MOUNT: &str = "/ui";

/// Vite's output directory for content-hashed files, which never change under one name.
const HASHED_DIR: &str = "assets/";

/// One embedded file and how to serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
    pub cache_control: &'static str,
}

/// The file answering `path` (a request path under [`MOUNT`]): the file itself, `index.html`
/// for the mount point and for any other path (the app routes on the client), or `None` for a
/// missing hashed file (a stale page asking for an old bundle gets a 404, not HTML as script).
pub fn lookup(path: &str) -> Option<Asset> {
    let rest = path.strip_prefix(MOUNT)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let relative = rest.trim_start_matches('/');
    if !relative.is_empty()
        && let Some(asset) = embedded(relative)
    {
        return Some(asset);
    }
    if relative.starts_with(HASHED_DIR) {
        return None;
    }
    embedded("index.html")
}

fn embedded(relative: &str) -> Option<Asset> {
    let index = ASSETS.binary_search_by(|(name, _)| (*name).cmp(relative)).ok()?;
    let (name, bytes) = ASSETS[index];
    let cache_control = if name.starts_with(HASHED_DIR) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Some(Asset { bytes, content_type: content_type(name), cache_control })
}

fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, extension)| extension).unwrap_or_default();
    match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_point_and_client_routes_answer_the_index_page() {
        let index = lookup("/ui").expect("an index page is always embedded");
        assert_eq!(index.content_type, "text/html; charset=utf-8");
        assert_eq!(index.cache_control, "no-cache");
        assert_eq!(lookup("/ui/"), Some(index));
        assert_eq!(lookup("/ui/sandboxes/0190abcd"), Some(index));
        assert_eq!(lookup("/ui/assets/missing-0123.js"), None, "a missing bundle is a 404");
        assert_eq!(lookup("/uix"), None, "not under the mount");
        assert_eq!(lookup("/sandboxd.v1.SandboxControl/GetSandbox"), None, "outside the mount");
    }

    #[test]
    fn hashed_files_are_immutable_and_typed_by_extension() {
        for (name, _) in ASSETS {
            let asset = lookup(&format!("{MOUNT}/{name}")).unwrap();
            if name.starts_with(HASHED_DIR) {
                assert_eq!(asset.cache_control, "public, max-age=31536000, immutable", "{name}");
            }
            if name.ends_with(".js") {
                assert_eq!(asset.content_type, "text/javascript; charset=utf-8");
            }
        }
        assert_eq!(content_type("assets/index-abc.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }
}
