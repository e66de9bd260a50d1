//! chatledger: an append-only, tamper-evident conversation ledger on PostgreSQL.
//!
//! `error` is what can go wrong; `auth` says who is calling; `ledger` is the domain, which
//! `admin` (tenants and keys) sits beside; `db` reaches PostgreSQL; `http` serves all of it and
//! `commands` runs it from the command line.

/// The access log: who read or changed what, written with the work it records.
pub mod access;
/// Tenants, API keys and tenant policies, as the admin key or the operator manages them.
pub mod admin;
/// Who is calling: API keys, their roles and tenants, the admin key.
pub mod auth;
/// What each subcommand of the binary does.
pub mod commands;
/// Command-line and environment configuration.
pub mod config;
/// Connection pools, migrations, notifications and the embedded PostgreSQL cluster.
pub mod db;
/// The one domain error and the classes of bad input.
pub mod error;
/// The HTTP API: router, extractors, handlers, problem documents, OpenAPI.
pub mod http;
/// The ledger domain: parsing, hashing, appending, reading and auditing. Knows nothing of HTTP.
pub mod ledger;
/// The metrics every part of chatledger reports, counted in one place.
pub mod metrics;
/// The live tail's fan-out of notifications to the streams following a session.
pub mod tail;
/// The one timestamp format of the API.
pub mod time;
/// The transparency log's pure core: Merkle proofs, signed notes, checkpoints, cosignatures.
pub mod tlog;
/// `chatledger witness`: follows, checks and cosigns a log's checkpoints.
pub mod witness;
