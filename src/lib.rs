//! chatledger: an append-only, tamper-evident conversation ledger on PostgreSQL.

/// Who is calling: tenant and author of a request.
pub mod auth;
/// What each subcommand of the binary does.
pub mod commands;
/// Command-line and environment configuration.
pub mod config;
/// Connection pools, migrations, the runtime role and the embedded PostgreSQL cluster.
pub mod db;
/// The HTTP API: router, extractors, handlers, problem documents, OpenAPI.
pub mod http;
/// The ledger domain: parsing, hashing, appending and reading. Knows nothing of HTTP.
pub mod ledger;
/// The transparency log's pure core: Merkle proofs, signed notes, checkpoints, cosignatures.
pub mod tlog;
