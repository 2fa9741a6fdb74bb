//! Trace context: the W3C Trace Context (`traceparent`, optional `tracestate`) a submitter hands
//! over with an execution, stored with it and given to every worker that claims it, so the
//! worker's spans join the submitter's trace.
//!
//! [`TraceContext`] is valid by construction: [`TraceContext::new`] and deserialization check
//! both headers, so a value that exists can be stored and propagated without another look. A
//! malformed header is `invalid_input`. The checks follow the W3C Trace Context format: a
//! `traceparent` of version `00` is exactly `00-<32 hex trace id>-<16 hex parent id>-<2 hex
//! flags>` in lowercase, with neither id all zeros; a later version (never `ff`) may append
//! `-`-separated fields after those four. A `tracestate` is at most [`MAX_TRACESTATE_BYTES`] of
//! printable ASCII holding at most [`MAX_TRACESTATE_MEMBERS`] `key=value` members.

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::EngineError;

/// Length of a version-`00` `traceparent`.
pub const TRACEPARENT_BYTES: usize = 55;
/// Longest `traceparent` accepted (a later version may carry more fields).
pub const MAX_TRACEPARENT_BYTES: usize = 256;
/// Longest `tracestate` accepted.
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// Most list members of a `tracestate`.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// JSON Schema pattern of a `traceparent`'s leading fields.
pub const TRACEPARENT_PATTERN: &str = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$";
/// JSON Schema pattern of a `tracestate`: printable ASCII.
pub const TRACESTATE_PATTERN: &str = r"^[\x20-\x7e]*$";

/// A W3C trace context: the submitter's span, which the worker's handler span takes as parent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceContext {
    /// The `traceparent` header value: version, trace id, parent span id and flags.
    #[schemars(length(min = TRACEPARENT_BYTES, max = MAX_TRACEPARENT_BYTES), pattern(TRACEPARENT_PATTERN))]
    traceparent: String,
    /// The `tracestate` header value: vendor-specific `key=value` members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_TRACESTATE_BYTES), pattern(TRACESTATE_PATTERN))]
    tracestate: Option<String>,
}

impl TraceContext {
    /// Validates both header values. An empty `tracestate` is the same as none.
    pub fn new(traceparent: impl Into<String>, tracestate: Option<String>) -> Result<Self, EngineError> {
        let traceparent = traceparent.into();
        check_traceparent(&traceparent)?;
        let tracestate = tracestate.filter(|s| !s.trim_matches([' ', '\t']).is_empty());
        if let Some(s) = &tracestate {
            check_tracestate(s)?;
        }
        Ok(Self { traceparent, tracestate })
    }

    /// A context from the header values of a request: `None` when there is no `traceparent`;
    /// a `tracestate` without a `traceparent` is refused, as it would be silently lost.
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Result<Option<Self>, EngineError> {
        match (traceparent, tracestate) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(EngineError::invalid("a tracestate header needs a traceparent header")),
            (Some(p), s) => Self::new(p, s.map(str::to_owned)).map(Some),
        }
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The `tracestate` header value, when there is one.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The trace id: 32 lowercase hex digits.
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// The parent span id: 16 lowercase hex digits.
    pub fn parent_id(&self) -> &str {
        &self.traceparent[36..52]
    }

    /// Whether the submitter sampled its span (flag bit 0).
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.traceparent[53..55], 16).is_ok_and(|f| f & 1 == 1)
    }
}

impl<'de> Deserialize<'de> for TraceContext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            traceparent: String,
            #[serde(default)]
            tracestate: Option<String>,
        }
        let f = Fields::deserialize(d)?;
        Self::new(f.traceparent, f.tracestate).map_err(serde::de::Error::custom)
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_traceparent(s: &str) -> Result<(), EngineError> {
    let bad = |why: &str| {
        let shown: String = s.chars().take(64).collect();
        EngineError::invalid(format!("malformed traceparent {shown:?}: {why}"))
    };
    if s.len() < TRACEPARENT_BYTES || s.len() > MAX_TRACEPARENT_BYTES {
        return Err(bad(&format!("must be {TRACEPARENT_BYTES} bytes (version 00)")));
    }
    if !s.is_ascii() {
        return Err(bad("not ASCII"));
    }
    let (version, trace_id, parent_id, flags) = (&s[0..2], &s[3..35], &s[36..52], &s[53..55]);
    if [2, 35, 52].iter().any(|&i| s.as_bytes()[i] != b'-') {
        return Err(bad("fields must be separated by '-'"));
    }
    if !is_lower_hex(version) || version == "ff" {
        return Err(bad("the version must be two lowercase hex digits other than ff"));
    }
    if version == "00" && s.len() != TRACEPARENT_BYTES {
        return Err(bad("version 00 has exactly four fields"));
    }
    if s.len() > TRACEPARENT_BYTES && s.as_bytes()[TRACEPARENT_BYTES] != b'-' {
        return Err(bad("fields must be separated by '-'"));
    }
    if !is_lower_hex(trace_id) || trace_id.bytes().all(|b| b == b'0') {
        return Err(bad("the trace id must be 32 lowercase hex digits, not all zero"));
    }
    if !is_lower_hex(parent_id) || parent_id.bytes().all(|b| b == b'0') {
        return Err(bad("the parent id must be 16 lowercase hex digits, not all zero"));
    }
    if !is_lower_hex(flags) {
        return Err(bad("the flags must be two lowercase hex digits"));
    }
    if s[TRACEPARENT_BYTES..].bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(bad("later fields must be printable ASCII"));
    }
    Ok(())
}

fn check_tracestate(s: &str) -> Result<(), EngineError> {
    let bad = |why: &str| {
        let shown: String = s.chars().take(64).collect();
        EngineError::invalid(format!("malformed tracestate {shown:?}: {why}"))
    };
    if s.len() > MAX_TRACESTATE_BYTES {
        return Err(bad(&format!("longer than {MAX_TRACESTATE_BYTES} bytes")));
    }
    if s.bytes().any(|b| b != b'\t' && !(0x20..=0x7e).contains(&b)) {
        return Err(bad("not printable ASCII"));
    }
    let mut members = 0;
    for member in s.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()) {
        members += 1;
        let Some((key, value)) = member.split_once('=') else { return Err(bad("a member is not key=value")) };
        if !valid_key(key) {
            return Err(bad("a key must be 1..=256 of a-z 0-9 _ - * / and one optional @"));
        }
        if value.is_empty() || value.len() > 256 || value.contains('=') || value.ends_with(' ') {
            return Err(bad("a value must be 1..=256 printable characters without '=' or a trailing space"));
        }
    }
    if members > MAX_TRACESTATE_MEMBERS {
        return Err(bad(&format!("more than {MAX_TRACESTATE_MEMBERS} members")));
    }
    Ok(())
}

/// A `tracestate` key: `simple-key` or `tenant@system`, each part starting with a lowercase
/// letter or digit, drawn from lowercase letters, digits and `_ - * /`.
fn valid_key(key: &str) -> bool {
    let part = |p: &str| {
        p.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b))
    };
    if key.len() > 256 {
        return false;
    }
    match key.split_once('@') {
        None => part(key),
        Some((tenant, system)) => part(tenant) && part(system),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ValidationKind;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents() {
        let cases: &[(&str, bool)] = &[
            (GOOD, true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true),
            ("", false),
            ("garbage", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\0", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b\u{e9}-01", false),
        ];
        for (input, ok) in cases {
            let got = TraceContext::new(*input, None);
            assert_eq!(got.is_ok(), *ok, "{input:?}: {got:?}");
            if let Err(e) = got {
                assert!(matches!(e, EngineError::Validation { kind: ValidationKind::InvalidInput, .. }), "{e:?}");
            }
        }
    }

    #[test]
    fn tracestates() {
        let long = format!("k={}", "v".repeat(MAX_TRACESTATE_BYTES));
        let many = (0..=MAX_TRACESTATE_MEMBERS).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        let cases: &[(&str, bool)] = &[
            ("congo=t61rcWkgMzE", true),
            ("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE", true),
            ("tenant@vendor=x,,other=y", true),
            ("a=b c", true),
            ("noequals", false),
            ("Upper=x", false),
            ("k=", false),
            ("k=a=b", false),
            ("k=trailing ", true),
            ("k= ", false),
            ("k=\u{e9}", false),
            ("@vendor=x", false),
            (&long, false),
            (&many, false),
        ];
        for (input, ok) in cases {
            let got = TraceContext::new(GOOD, Some((*input).to_owned()));
            assert_eq!(got.is_ok(), *ok, "{input:?}: {got:?}");
        }
    }

    #[test]
    fn fields_and_headers() {
        let t = TraceContext::new(GOOD, Some(String::new())).unwrap();
        assert_eq!(t.tracestate(), None);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id(), "00f067aa0ba902b7");
        assert!(t.sampled());
        assert!(!TraceContext::new(GOOD.replace("-01", "-00"), None).unwrap().sampled());
        assert_eq!(TraceContext::from_headers(None, None).unwrap(), None);
        assert!(TraceContext::from_headers(None, Some("k=v")).is_err());
        let h = TraceContext::from_headers(Some(GOOD), Some("k=v")).unwrap().unwrap();
        assert_eq!(h.tracestate(), Some("k=v"));
    }

    #[test]
    fn serde_validates() {
        let t = TraceContext::new(GOOD, Some("k=v".into())).unwrap();
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json, serde_json::json!({"traceparent": GOOD, "tracestate": "k=v"}));
        assert_eq!(serde_json::from_value::<TraceContext>(json).unwrap(), t);
        let bad = serde_json::json!({"traceparent": "00-zz"});
        assert!(serde_json::from_value::<TraceContext>(bad).unwrap_err().to_string().contains("traceparent"));
        let unknown = serde_json::json!({"traceparent": GOOD, "baggage": "x"});
        assert!(serde_json::from_value::<TraceContext>(unknown).is_err());
    }
}
