//! The hash chain of API.md "Hash chain": salted payload digests and chained entry hashes over
//! RFC 8785 canonical JSON. Pure functions, checked against the golden vectors that the SQL
//! writer and the independent Python verifier are checked against too
//! (`tests/vectors/hash_chain.json`).

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use crate::time::Timestamp;

/// `prev_hash` of the first entry of every session.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// RFC 8785 canonical JSON of any serializable value (ECMAScript number formatting).
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Only JSON data is canonicalised here: keys are strings and numbers finite, so the
    // serializer has nothing to refuse.
    serde_json_canonicalizer::to_vec(value)
        .unwrap_or_else(|_| unreachable!("canonical JSON of JSON data"))
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
    pub created_at: Timestamp,
    pub idempotency_key: Option<&'a str>,
    pub author: &'a str,
    #[serde(serialize_with = "lower_hex")]
    pub payload_digest: &'a [u8],
}

/// `SHA-256(prev_hash || JCS(header))`.
pub fn entry_hash(prev_hash: &[u8], header: &EntryHeader<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical_json(header));
    hasher.finalize().into()
}

/// Bytes as lower-case hex, written without a String per value (entries are the bulk of every
/// read).
pub fn lower_hex<S: Serializer, B: AsRef<[u8]>>(
    bytes: &B,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let bytes = bytes.as_ref();
    let mut buffer = [0_u8; 64];
    let Some(out) = buffer.get_mut(..bytes.len() * 2) else {
        return serializer.serialize_str(&hex::encode(bytes));
    };
    hex::encode_to_slice(bytes, out).map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(std::str::from_utf8(out).map_err(serde::ser::Error::custom)?)
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
    fn numbers_tied_between_two_doubles_round_to_even_as_ecmascript_does() {
        // canon-json 0.2 wrote ...465.3 here (issue 11, item 12).
        let value: Value = serde_json::from_str("[818689267909465.25]").expect("valid JSON");
        assert_eq!(canonical_json(&value), b"[818689267909465.2]");
    }

    #[test]
    fn payload_digest_is_salted_and_order_independent() {
        let metadata_ab = json!({"a": 1, "b": [1.0, "x"]});
        let metadata_ba: Value =
            serde_json::from_str(r#"{"b": [1, "x"], "a": 1}"#).expect("valid JSON");
        let content = json!("yes");
        let salt = [7u8; 16];
        let object = |value: &Value| value.as_object().expect("object").clone();
        let one = payload_digest(&salt, Some(&content), &object(&metadata_ab));
        let two = payload_digest(&salt, Some(&content), &object(&metadata_ba));
        assert_eq!(one, two);
        assert_ne!(
            one,
            payload_digest(&[8u8; 16], Some(&content), &object(&metadata_ab))
        );
        let expected: [u8; 32] = {
            let mut hasher = Sha256::new();
            hasher.update(salt);
            hasher.update(br#"{"content":"yes","metadata":{"a":1,"b":[1,"x"]}}"#);
            hasher.finalize().into()
        };
        assert_eq!(one, expected);
    }

    #[test]
    fn the_golden_vectors_hash_alike() {
        let vectors: Value =
            serde_json::from_str(include_str!("../../tests/vectors/hash_chain.json"))
                .expect("vectors");
        let cases = vectors["cases"].as_array().expect("cases");
        assert!(cases.len() >= 10);
        for case in cases {
            let name = case["name"].as_str().expect("name");
            let text = |key: &str| case[key].as_str().expect(key);
            let bytes = |key: &str| hex::decode(text(key)).expect(key);
            let content = (!case["content"].is_null()).then_some(&case["content"]);
            let metadata = case["metadata"].as_object().expect("metadata");
            let payload = canonical_payload(content, metadata);
            assert_eq!(
                String::from_utf8_lossy(&payload),
                text("canonical_payload"),
                "{name}"
            );
            let digest = digest_canonical_payload(&bytes("salt"), &payload);
            assert_eq!(hex::encode(digest), text("payload_digest"), "{name}");
            let field = |key: &str| case["header"][key].as_str();
            let header = EntryHeader {
                tenant: field("tenant").expect("tenant"),
                session_id: field("session_id").expect("session_id"),
                seq: case["header"]["seq"].as_i64().expect("seq"),
                kind: field("kind").expect("kind"),
                role: field("role"),
                created_at: Timestamp::parse_exact(field("created_at").expect("at")).expect("at"),
                idempotency_key: field("idempotency_key"),
                author: field("author").expect("author"),
                payload_digest: &digest,
            };
            assert_eq!(
                String::from_utf8_lossy(&canonical_json(&header)),
                text("canonical_header"),
                "{name}"
            );
            assert_eq!(
                hex::encode(entry_hash(&bytes("prev_hash"), &header)),
                text("hash"),
                "{name}"
            );
        }
    }
}
