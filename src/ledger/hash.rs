//! The hash chain of API.md "Hash chain": salted payload digests and chained entry hashes over
//! RFC 8785 canonical JSON. Pure functions, shared by the verifier and the tests.

use canon_json::CanonicalFormatter;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry of every session.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// RFC 8785 canonical JSON of any serializable value.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut out, CanonicalFormatter::new());
    // Serializing plain JSON data into memory cannot fail: keys are strings, numbers are finite.
    if value.serialize(&mut serializer).is_err() {
        unreachable!("canonical JSON of JSON data");
    }
    out
}

#[derive(Serialize)]
struct Payload<'a> {
    content: Option<&'a Value>,
    metadata: &'a Map<String, Value>,
}

/// `JCS({"content": ..., "metadata": ...})`, the bytes a payload digest commits to.
pub fn canonical_payload(content: Option<&Value>, metadata: &Map<String, Value>) -> Vec<u8> {
    canonical_json(&Payload { content, metadata })
}

/// `SHA-256(salt || JCS({"content", "metadata"}))`.
pub fn payload_digest(
    salt: &[u8],
    content: Option<&Value>,
    metadata: &Map<String, Value>,
) -> [u8; 32] {
    digest_canonical_payload(salt, &canonical_payload(content, metadata))
}

/// `SHA-256(salt || canonical_payload)`, for a payload already canonicalised.
pub fn digest_canonical_payload(salt: &[u8], canonical_payload: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(canonical_payload);
    hasher.finalize().into()
}

/// The header an entry hash commits to, every value exactly as the API returns it.
#[derive(Debug, Serialize)]
pub struct EntryHeader<'a> {
    pub tenant: &'a str,
    pub session_id: &'a str,
    pub seq: i64,
    pub kind: &'a str,
    pub role: Option<&'a str>,
    pub created_at: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub author: &'a str,
    pub payload_digest: &'a str,
}

/// `SHA-256(prev_hash || JCS(header))`.
pub fn entry_hash(prev_hash: &[u8], header: &EntryHeader<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical_json(header));
    hasher.finalize().into()
}

/// The `strftime` form of `format_timestamp`, for writing a timestamp without a String.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// RFC 3339 UTC with exactly six fractional digits, as every timestamp of the API.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_matches_rfc_8785_examples() {
        // RFC 8785 section 3.2.2 and appendix B.
        let value: Value = serde_json::from_str(
            r#"{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
                "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
                "literals": [null, true, false]}"#,
        )
        .expect("valid JSON");
        assert_eq!(
            String::from_utf8(canonical_json(&value)).expect("utf-8"),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
        let sorting: Value = serde_json::from_str(
            r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
                "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}"#,
        )
        .expect("valid JSON");
        // Keys sort by UTF-16 code units, so the values appear in this order (RFC 8785 3.2.3).
        let text = String::from_utf8(canonical_json(&sorting)).expect("utf-8");
        let order = [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|value| text.find(value).expect("value present"))
            .collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{text}");
    }

    #[test]
    fn payload_digest_is_salted_and_order_independent() {
        let metadata_ab = json!({"a": 1, "b": [1.0, "x"]});
        let metadata_ba: Value =
            serde_json::from_str(r#"{"b": [1, "x"], "a": 1}"#).expect("valid JSON");
        let content = json!("yes");
        let salt = [7u8; 16];
        let one = payload_digest(
            &salt,
            Some(&content),
            metadata_ab.as_object().expect("object"),
        );
        let two = payload_digest(
            &salt,
            Some(&content),
            metadata_ba.as_object().expect("object"),
        );
        assert_eq!(one, two);
        let other_salt = payload_digest(
            &[8u8; 16],
            Some(&content),
            metadata_ab.as_object().expect("object"),
        );
        assert_ne!(one, other_salt);
        let expected: [u8; 32] = {
            let mut hasher = Sha256::new();
            hasher.update(salt);
            hasher.update(br#"{"content":"yes","metadata":{"a":1,"b":[1,"x"]}}"#);
            hasher.finalize().into()
        };
        assert_eq!(one, expected);
    }

    #[test]
    fn entry_hash_commits_to_the_canonical_header() {
        let header = EntryHeader {
            tenant: "acme",
            session_id: "user-42",
            seq: 1,
            kind: "message",
            role: Some("user"),
            created_at: "2026-11-21T10:15:30.123456Z",
            idempotency_key: None,
            author: "key_1",
            payload_digest: "ab",
        };
        let expected: [u8; 32] = {
            let mut hasher = Sha256::new();
            hasher.update(GENESIS_HASH);
            hasher.update(
                br#"{"author":"key_1","created_at":"2026-11-21T10:15:30.123456Z","idempotency_key":null,"kind":"message","payload_digest":"ab","role":"user","seq":1,"session_id":"user-42","tenant":"acme"}"#,
            );
            hasher.finalize().into()
        };
        assert_eq!(entry_hash(&GENESIS_HASH, &header), expected);
    }

    #[test]
    fn timestamps_have_six_fractional_digits() {
        let at = DateTime::parse_from_rfc3339("2026-11-21T10:15:30Z")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(format_timestamp(at), "2026-11-21T10:15:30.000000Z");
    }
}
