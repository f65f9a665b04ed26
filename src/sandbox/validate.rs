//! Field validators shared by the request parsers. Each returns the violations it found, so one
//! response can name every bad field at once.

use std::collections::BTreeMap;

use crate::error::{FieldViolation, MAX_VIOLATIONS};

pub const MAX_NAME_LEN: usize = 63;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY_LEN: usize = 63;
pub const MAX_LABEL_VALUE_LEN: usize = 63;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_REQUEST_ID_LEN: usize = 128;
pub const MAX_REASON_LEN: usize = 1024;

/// Runs `check` on every entry of a repeated field, keeping at most [`MAX_VIOLATIONS`]
/// violations and counting the rest in one more, so a request with millions of bad entries
/// costs no more memory than one with twenty.
pub fn check_each<T>(
    field: &str,
    items: impl IntoIterator<Item = T>,
    mut check: impl FnMut(usize, T) -> Option<FieldViolation>,
) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    let mut more = 0usize;
    for (index, item) in items.into_iter().enumerate() {
        if let Some(violation) = check(index, item) {
            if violations.len() < MAX_VIOLATIONS {
                violations.push(violation);
            } else {
                more += 1;
            }
        }
    }
    if more > 0 {
        violations.push(FieldViolation::new(field, format!("{more} more entries are invalid")));
    }
    violations
}

/// Sandbox names are DNS labels (RFC 1123): lowercase letters, digits and `-`, starting with a
/// letter, not ending with `-`, at most 63 characters.
pub fn check_name(field: &str, name: &str) -> Option<FieldViolation> {
    let problem = if name.is_empty() {
        Some("must not be empty".to_string())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("must be at most {MAX_NAME_LEN} characters"))
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("must start with a lowercase letter".to_string())
    } else if name.ends_with('-') {
        Some("must not end with '-'".to_string())
    } else if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        Some("may contain only lowercase letters, digits and '-'".to_string())
    } else {
        None
    };
    problem.map(|description| FieldViolation::new(field, description))
}

/// Label keys: `[a-z][a-z0-9_.-]*`, at most 63; values: `[A-Za-z0-9_.-]*`, at most 63.
pub fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Vec<FieldViolation> {
    if labels.len() > MAX_LABELS {
        return vec![FieldViolation::new(field, format!("at most {MAX_LABELS} labels"))];
    }
    let mut violations = Vec::new();
    for (key, value) in labels {
        let key_ok = key.len() <= MAX_LABEL_KEY_LEN
            && key.starts_with(|c: char| c.is_ascii_lowercase())
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
        if !key_ok {
            violations.push(FieldViolation::new(
                format!("{field}[{key:?}]"),
                format!(
                    "label key must match [a-z][a-z0-9_.-]* and be at most {MAX_LABEL_KEY_LEN} characters"
                ),
            ));
        }
        let value_ok = value.len() <= MAX_LABEL_VALUE_LEN
            && value.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !value_ok {
            violations.push(FieldViolation::new(
                format!("{field}[{key:?}]"),
                format!(
                    "label value must match [A-Za-z0-9_.-]* and be at most {MAX_LABEL_VALUE_LEN} characters"
                ),
            ));
        }
    }
    violations
}

/// AIP-155 request ids: 1–128 characters of `[A-Za-z0-9_-]` (a UUID is a good choice).
pub fn check_request_id(field: &str, request_id: &str) -> Option<FieldViolation> {
    let ok = !request_id.is_empty()
        && request_id.len() <= MAX_REQUEST_ID_LEN
        && request_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    (!ok).then(|| {
        FieldViolation::new(
            field,
            format!("must be 1-{MAX_REQUEST_ID_LEN} characters of [A-Za-z0-9_-]"),
        )
    })
}

pub fn check_metadata(
    field: &str,
    metadata: &serde_json::Map<String, serde_json::Value>,
) -> Option<FieldViolation> {
    let size = serde_json::to_vec(metadata).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
    (size > MAX_METADATA_BYTES).then(|| {
        FieldViolation::new(
            field,
            format!("must be at most {MAX_METADATA_BYTES} bytes as JSON (is {size})"),
        )
    })
}

pub fn check_reason(field: &str, reason: &str) -> Option<FieldViolation> {
    (reason.len() > MAX_REASON_LEN || reason.chars().any(char::is_control)).then(|| {
        FieldViolation::new(
            field,
            format!("must be at most {MAX_REASON_LEN} characters without control characters"),
        )
    })
}

/// Longest workspace-relative path.
pub const MAX_PATH_BYTES: usize = 4096;

/// A path relative to a workspace root, checked lexically: not absolute, no `..` or `.`
/// component, no NUL byte, no empty component (`a//b`). Empty is the root. Symlinks are the
/// file API's business (`workspace::files`); a command's working directory is resolved inside
/// its sandbox, where a symlink cannot lead to the host.
pub fn check_relative_path(field: &str, path: &str) -> Option<FieldViolation> {
    let trimmed = path.trim_end_matches('/');
    let problem = if path.len() > MAX_PATH_BYTES {
        Some(format!("must be at most {MAX_PATH_BYTES} bytes"))
    } else if path.starts_with('/') {
        Some("must be relative to the workspace root, not absolute".to_string())
    } else if path.contains('\0') {
        Some("must not contain NUL bytes".to_string())
    } else if !trimmed.is_empty()
        && trimmed.split('/').any(|part| part.is_empty() || part == "." || part == "..")
    {
        Some("must stay inside the workspace: no '..', '.' or empty components".to_string())
    } else {
        None
    };
    problem.map(|description| FieldViolation::new(field, description))
}

/// A list of workspace paths (`paths[i]`): none empty, each [`check_relative_path`].
pub fn check_relative_paths(field: &str, paths: &[String]) -> Vec<FieldViolation> {
    check_each(field, paths, |index, path| {
        let field = format!("{field}[{index}]");
        if path.is_empty() {
            Some(FieldViolation::new(field, "must not be empty"))
        } else {
            check_relative_path(&field, path)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_label_rules() {
        assert!(check_name("name", "my-box-1").is_none());
        for bad in ["", "1box", "Box", "box-", "bo_x", &"a".repeat(64), "b\u{e9}"] {
            assert!(check_name("name", bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn relative_paths_stay_inside() {
        for good in ["", "src", "src/lib.rs", "a/b/"] {
            assert!(check_relative_path("path", good).is_none(), "{good:?} refused");
        }
        for bad in ["/etc", "..", "a/../../x", "a//b", "./a", "a\0b"] {
            assert!(check_relative_path("path", bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn labels_report_each_bad_entry() {
        let labels = BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("Bad".to_string(), "x".to_string()),
            ("team".to_string(), "a b".to_string()),
        ]);
        let violations = check_labels("labels", &labels);
        assert_eq!(violations.len(), 2);
        assert_eq!(violations[0].field, "labels[\"Bad\"]");
    }
}
