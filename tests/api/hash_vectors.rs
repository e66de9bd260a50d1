//! The golden vectors of the hash rule (tests/vectors/hash_chain.json, computed independently
//! by make_hash_chain.py) hash alike in the SQL writer and the independent Python verifier; the
//! Rust verifier checks them in its unit tests.

use serde_json::Value;

use crate::helpers::TestDatabase;

fn cases() -> Vec<Value> {
    let vectors: Value = serde_json::from_str(include_str!("../vectors/hash_chain.json"))
        .expect("the vectors are JSON");
    vectors["cases"].as_array().expect("cases").clone()
}

#[tokio::test]
async fn the_sql_writer_hashes_every_golden_vector_alike() {
    let database = TestDatabase::new().await;
    let pool = database.runtime_pool().await;
    let cases = cases();
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let header = &case["header"];
        let text = |key: &str| header[key].as_str().map(str::to_owned);
        let hex = |value: &Value| hex::decode(value.as_str().expect("hex")).expect("hex");
        let hash: Vec<u8> = sqlx::query_scalar(
            "SELECT chatledger_entry_hash($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(hex(&case["prev_hash"]))
        .bind(text("tenant"))
        .bind(text("session_id"))
        .bind(header["seq"].as_i64().expect("seq"))
        .bind(text("kind"))
        .bind(text("role"))
        .bind(text("created_at"))
        .bind(text("idempotency_key"))
        .bind(text("author"))
        .bind(hex(&header["payload_digest"]))
        .fetch_one(&pool)
        .await
        .expect("the hash function runs");
        assert_eq!(
            hex::encode(hash),
            case["hash"].as_str().expect("hash"),
            "{name}"
        );
    }
    assert!(cases.len() >= 10);
}

#[tokio::test]
async fn the_independent_verifier_hashes_every_golden_vector_alike() {
    let python = std::env::var("CHATLEDGER_TEST_PYTHON")
        .expect("CHATLEDGER_TEST_PYTHON is not set: run ./scripts/test.sh, which prepares it");
    let root = env!("CARGO_MANIFEST_DIR");
    let output = std::process::Command::new(python)
        .arg(format!("{root}/tests/independent/verify_export.py"))
        .arg("--vectors")
        .arg(format!("{root}/tests/vectors/hash_chain.json"))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("{} golden vectors hash alike", cases().len())),
        "{stdout}"
    );
}
