//! The `[files]` settings of the server config.

use serde::{Deserialize, Serialize};

/// Limits of workspace file access. Sizes are plain byte counts.
///
/// There is deliberately no limit on how much one `ReadFile` call may read: a read streams one
/// chunk at a time, pulled as gRPC flow control lets the client take it, so memory stays at one
/// chunk per call whatever the file size, and `server.request_timeout` bounds its duration. Page
/// sizes are fixed by the API (0 → 50, at most 1000), so they are not settings either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileLimits {
    /// Largest file `WriteFile` accepts; a stream carrying more fails with RESOURCE_EXHAUSTED
    /// and leaves the old file as it was.
    pub max_write_bytes: u64,
    /// Size of each `ReadFile` chunk (the last one may be shorter). Must leave room in
    /// `server.max_message_bytes` for the message's other fields.
    pub read_chunk_bytes: usize,
}

impl Default for FileLimits {
    fn default() -> Self {
        Self { max_write_bytes: 256 * 1024 * 1024, read_chunk_bytes: 64 * 1024 }
    }
}

/// Headroom a `ReadFileResponse` needs besides its chunk (tags, lengths, two int64s).
const RESPONSE_OVERHEAD: usize = 64;

impl FileLimits {
    /// Problems with these settings, each naming its key (`files.*`), for `Config::validate`.
    pub fn problems(&self, max_message_bytes: usize) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_write_bytes == 0 {
            problems.push("files.max_write_bytes must be greater than 0".to_string());
        }
        if self.read_chunk_bytes == 0 {
            problems.push("files.read_chunk_bytes must be greater than 0".to_string());
        } else if self.read_chunk_bytes.saturating_add(RESPONSE_OVERHEAD) > max_message_bytes {
            problems.push(format!(
                "files.read_chunk_bytes must be at most server.max_message_bytes - \
                 {RESPONSE_OVERHEAD} ({})",
                max_message_bytes.saturating_sub(RESPONSE_OVERHEAD)
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_unknown_keys_are_refused() {
        let limits: FileLimits = toml::from_str("").unwrap();
        assert_eq!(limits, FileLimits::default());
        assert_eq!(limits.max_write_bytes, 268_435_456);
        assert_eq!(limits.read_chunk_bytes, 65_536);
        let limits: FileLimits = toml::from_str("max_write_bytes = 1024").unwrap();
        assert_eq!(limits.max_write_bytes, 1024);
        assert!(toml::from_str::<FileLimits>("max_read_bytes = 1").is_err());
    }

    #[test]
    fn problems_name_their_keys() {
        assert!(FileLimits::default().problems(4 * 1024 * 1024).is_empty());
        let bad = FileLimits { max_write_bytes: 0, read_chunk_bytes: 8 * 1024 * 1024 };
        let problems = bad.problems(4 * 1024 * 1024);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("files.max_write_bytes"));
        assert!(problems[1].contains("files.read_chunk_bytes"));
    }
}
