//! Caller-namespaced tag keys: `<caller>.<field>`, matching `^[a-z][a-z0-9_]*\.[a-z0-9_][a-z0-9_.]*$`.

use crate::error::{EngineError, ValidationKind};

/// Longest tag key in bytes.
pub const TAG_KEY_MAX_BYTES: usize = 128;
/// Longest tag value in bytes.
pub const TAG_VALUE_MAX_BYTES: usize = 4096;
/// Most tags an execution may carry.
pub const MAX_TAGS: usize = 64;
/// JSON Schema pattern of a tag key (at most [`TAG_KEY_MAX_BYTES`]).
pub const TAG_KEY_PATTERN: &str = r"^[a-z][a-z0-9_]*\.[a-z0-9_][a-z0-9_.]*$";

/// JSON Schema of a caller's tag map: at most [`MAX_TAGS`] entries, keys matching
/// [`TAG_KEY_PATTERN`], values of at most [`TAG_VALUE_MAX_BYTES`] without NUL.
pub fn tags_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_TAGS,
        "propertyNames": {"type": "string", "maxLength": TAG_KEY_MAX_BYTES, "pattern": TAG_KEY_PATTERN},
        "additionalProperties": tag_value_schema(),
    })
}

/// JSON Schema of one tag value.
pub fn tag_value_schema() -> serde_json::Value {
    serde_json::json!({"type": "string", "maxLength": TAG_VALUE_MAX_BYTES, "pattern": crate::execution::TEXT_PATTERN})
}

/// Validates a tag key against the caller-namespace pattern.
pub fn validate_tag_key(key: &str) -> Result<(), EngineError> {
    let err = || {
        EngineError::validation(
            ValidationKind::InvalidTagKey,
            format!(
                "tag key {key:?} must match ^[a-z][a-z0-9_]*\\.[a-z0-9_][a-z0-9_.]*$ (at most {TAG_KEY_MAX_BYTES} bytes)"
            ),
        )
    };
    if key.len() > TAG_KEY_MAX_BYTES {
        return Err(err());
    }
    let Some((caller, field)) = key.split_once('.') else {
        return Err(err());
    };
    let mut c = caller.bytes();
    match c.next() {
        Some(b) if b.is_ascii_lowercase() => {}
        _ => return Err(err()),
    }
    if !c.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(err());
    }
    let mut f = field.bytes();
    match f.next() {
        Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' => {}
        _ => return Err(err()),
    }
    if !f.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.') {
        return Err(err());
    }
    Ok(())
}

/// Validates a tag value's size.
pub fn validate_tag_value(key: &str, value: &str) -> Result<(), EngineError> {
    crate::execution::validate_text(&format!("tag {key:?} value"), value)?;
    if value.len() > TAG_VALUE_MAX_BYTES {
        return Err(EngineError::invalid(format!(
            "tag {key:?} value is {} bytes; the limit is {TAG_VALUE_MAX_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_key_table() {
        let cases = [
            ("cairn.session_id", true),
            ("a.b", true),
            ("a1_.0", true),
            ("app.x.y.z", true),
            ("app._x", true),
            ("App.x", false),
            ("1app.x", false),
            ("app", false),
            ("app.", false),
            (".x", false),
            ("app.X", false),
            ("app.x-y", false),
            ("app..x", false),
            ("ap-p.x", false),
            ("", false),
        ];
        for (key, ok) in cases {
            assert_eq!(validate_tag_key(key).is_ok(), ok, "{key}");
        }
        assert!(validate_tag_key(&format!("a.{}", "b".repeat(200))).is_err());
    }
}
