//! Integration tests against a real PostgreSQL (DATABASE_URL, set by ./scripts/test.sh), each in a
//! freshly migrated database, driving real HTTP servers on loopback.

#[path = "../common/binary.rs"]
mod testbin;
#[path = "../common/database.rs"]
mod testdb;
#[path = "../common/postgres.rs"]
mod testpg;

mod access;
mod appending;
mod audit;
mod binary;
mod checkpoints;
mod compliance;
mod concurrency;
mod console;
mod database;
mod erasure;
mod hardening;
mod hash_vectors;
mod helpers;
mod hostile;
mod reading;
mod search_index;
mod tail;
mod validation;
