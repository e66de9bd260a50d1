//! Fault injection against the real binary: SIGKILL under load, PostgreSQL stopped mid-load,
//! pool exhaustion, a storm of client disconnects, a primary killed and its synchronous standby
//! promoted. A history checker reads every session back
//! and counts anomalies; a negative control proves that the checker can fail.

#[path = "../common/binary.rs"]
mod testbin;
#[path = "../common/database.rs"]
mod testdb;
#[path = "../common/postgres.rs"]
mod testpg;

mod checker;
mod disconnects;
mod failover;
mod harness;
mod negative;
mod outage;
mod pool;
mod replica;
mod replication;
mod sigkill;
mod synthetic;
