//! The command line; every flag can also be set by its environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::db::PoolSettings;
use crate::http::{HttpSettings, ServeSettings};
use crate::ledger::Limits;

#[derive(Debug, Parser)]
#[command(
    name = "chatledger",
    version,
    about = "Append-only, tamper-evident conversation ledger"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "CHATLEDGER_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Compliance reads as the operator: audit search and the access log (both recorded, with
    /// actor `operator`).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Legal holds of a tenant, as the operator.
    #[command(subcommand)]
    Holds(HoldsCommand),
    /// Erase a session's payloads, as the operator (API.md "Erasure").
    Erase {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        session: String,
        /// Why (1 to 500 characters); kept in the chain.
        #[arg(long)]
        reason: String,
        /// The last seq erased; default the whole session, which also closes it.
        #[arg(long)]
        through_seq: Option<i64>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Retention: erase payloads older than each tenant's retention_days.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Recompute stored hash chains (exit 0: all intact, 1: something broken, 2: other error).
    Verify(VerifyArgs),
    /// Verify an export offline, with no database and no server (exit 0, 1 or 2 as verify).
    VerifyExport {
        /// The export file, or - for standard input.
        file: PathBuf,
        /// A receipt: a head_hash from a 201 response, which the chain must reach.
        #[arg(long)]
        expect_head: Option<String>,
        /// The log's verifier key (`GET /v1/checkpoint/key`): also check the trailer's signed
        /// checkpoint and the head's inclusion in it.
        #[arg(long)]
        log_key: Option<String>,
    },
    /// Follow a chatledger log as a witness: check and cosign each checkpoint, and exit
    /// non-zero on a bad signature, another key or an inconsistent log.
    Witness {
        /// The server, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        /// The witness's own signer key file (same format as a checkpoint key).
        #[arg(long)]
        key_file: PathBuf,
        /// Where the witness keeps the checkpoints it accepted (survives restarts).
        #[arg(long)]
        state_dir: PathBuf,
        /// The log's verifier key; required on the first run, then recorded in the state dir.
        #[arg(long)]
        log_key: Option<String>,
        /// A tenant API key of any role, to read the checkpoint routes.
        #[arg(long, env = "CHATLEDGER_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Seconds between fetches.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Check once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Create a checkpoint signer key file, or print a key file's verifier key.
    CheckpointKey {
        /// Write a new signer key to this file (mode 0600; never over an existing file).
        #[arg(long, requires = "name", conflicts_with = "key_file")]
        generate: Option<PathBuf>,
        /// The key's name (with --generate), e.g. chatledger/<log name>.
        #[arg(long)]
        name: Option<String>,
        /// Print the verifier key of this signer key file.
        #[arg(long, required_unless_present = "generate")]
        key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The session to verify (with --tenant).
    #[arg(
        long,
        requires = "tenant",
        conflicts_with = "all",
        required_unless_present_any = ["all", "checkpoints"]
    )]
    pub session: Option<String>,
    /// The session's tenant; with --all, only this tenant's sessions.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Every session (of every tenant, or of --tenant), streamed.
    #[arg(long)]
    pub all: bool,
    /// Check the transparency log: recompute every append leaf from the stored sessions,
    /// rebuild the tree, and check it against the stored checkpoints and those in
    /// --checkpoint-dir.
    #[arg(long)]
    pub checkpoints: bool,
    /// Checkpoints kept outside the database (`serve --checkpoint-dir`).
    #[arg(long, requires = "checkpoints")]
    pub checkpoint_dir: Option<PathBuf>,
    /// The log's verifier key: also check every checkpoint's signature.
    #[arg(long, requires = "checkpoints")]
    pub log_key: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Search every message of a tenant (API.md "Audit search"); one JSON line per hit.
    Search {
        #[arg(long)]
        tenant: String,
        /// Terms separated by spaces, "quoted phrases" allowed.
        q: Option<String>,
        #[arg(long)]
        session: Option<String>,
        /// system, user, assistant or tool.
        #[arg(long)]
        role: Option<String>,
        /// A key id.
        #[arg(long)]
        author: Option<String>,
        /// Most hits to print.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// A tenant's access log, ascending; one JSON line per record.
    Access {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        session: Option<String>,
        /// A key id, admin or operator.
        #[arg(long)]
        actor: Option<String>,
        /// Most records to print.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum HoldsCommand {
    /// The tenant's holds, one JSON line each.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Place a hold on sessions; prints it.
    Place {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        reason: String,
        /// Session ids to hold.
        #[arg(long = "session")]
        sessions: Vec<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Add sessions to a hold.
    Add {
        #[arg(long)]
        tenant: String,
        id: i64,
        #[arg(long = "session", required = true)]
        sessions: Vec<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Release a hold (recorded; never deleted).
    Release {
        #[arg(long)]
        tenant: String,
        id: i64,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Run one sweep now (or, with --dry-run, say what it would erase).
    Run {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant (name: 1 to 63 of a-z 0-9 -).
    Create {
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it (it is shown only this once).
    Create {
        #[arg(long)]
        tenant: String,
        /// writer, reader or auditor.
        #[arg(long)]
        role: String,
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List API keys without their secrets.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke an API key at once.
    Revoke {
        id: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Where the database is.
#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL of the schema owner role; without it chatledger runs its own cluster in
    /// `<data-dir>/pg`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Directory of the embedded PostgreSQL cluster (used without a database URL).
    #[arg(long, env = "CHATLEDGER_DATA_DIR", default_value = "./chatledger-data")]
    pub data_dir: PathBuf,
}

// The URL may hold a password: never print it.
impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

#[derive(Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// PostgreSQL URL of a read replica (a streaming standby of the database) for compliance
    /// reads: audit search, export, verify and the access-log listing. Their access records are
    /// still written on the primary.
    #[arg(long, env = "CHATLEDGER_REPLICA_URL", hide_env_values = true)]
    pub replica_url: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "CHATLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// File holding the admin key (keeps it out of the process list).
    #[arg(long, env = "CHATLEDGER_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,
    /// The admin key itself (at least 32 characters); prefer --admin-key-file.
    #[arg(long, env = "CHATLEDGER_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Maximum database connections of this server.
    #[arg(long, env = "CHATLEDGER_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,
    /// How long a request waits for a database connection before answering 503 (ms).
    #[arg(long, env = "CHATLEDGER_ACQUIRE_TIMEOUT_MS", default_value_t = 2000)]
    pub acquire_timeout_ms: u64,
    /// Server-side statement timeout (ms).
    #[arg(long, env = "CHATLEDGER_STATEMENT_TIMEOUT_MS", default_value_t = 5000)]
    pub statement_timeout_ms: u64,
    /// Maximum request body size (bytes).
    #[arg(long, env = "CHATLEDGER_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Maximum serialized content plus metadata of one message (bytes).
    #[arg(long, env = "CHATLEDGER_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub max_message_bytes: usize,
    /// Maximum messages per append.
    #[arg(long, env = "CHATLEDGER_MAX_BATCH", default_value_t = 100)]
    pub max_batch: usize,
    /// A request's headers must arrive within this, and an idle kept-alive connection is closed
    /// after it (ms).
    #[arg(
        long,
        env = "CHATLEDGER_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,
    /// A request that takes longer is answered 503 (ms).
    #[arg(long, env = "CHATLEDGER_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Open connections served in full; beyond, a few more get the probes (and 503), the rest
    /// wait to be accepted.
    #[arg(long, env = "CHATLEDGER_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// On SIGTERM, how long in-flight requests may take to finish (ms).
    #[arg(long, env = "CHATLEDGER_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// Request bodies held in memory at once, across all requests (bytes); a request waits for
    /// its share before its body is read.
    #[arg(long, env = "CHATLEDGER_MAX_BODY_BYTES_IN_FLIGHT", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes_in_flight: usize,
    /// Verifies and exports running at once; beyond, 429 with Retry-After.
    #[arg(long, env = "CHATLEDGER_MAX_CONCURRENT_AUDITS", default_value_t = 4)]
    pub max_concurrent_audits: usize,
    /// Live tails (`GET /v1/sessions/{id}/events`) open at once per key on this server; beyond,
    /// 429 with Retry-After.
    #[arg(long, env = "CHATLEDGER_MAX_STREAMS_PER_KEY", default_value_t = crate::tail::DEFAULT_STREAMS_PER_KEY)]
    pub max_streams_per_key: usize,
    /// Largest page of entries a read returns, serialized (bytes; at least one entry).
    #[arg(long, env = "CHATLEDGER_MAX_PAGE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_page_bytes: usize,
    /// Seconds between retention sweeps (one server sweeps at a time).
    #[arg(
        long,
        env = "CHATLEDGER_RETENTION_INTERVAL_SECS",
        default_value_t = 3600
    )]
    pub retention_interval_secs: u64,
    /// Peers whose X-Forwarded-For names the client, comma-separated IP addresses.
    #[arg(long, env = "CHATLEDGER_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxy: Vec<std::net::IpAddr>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The transparency log's signing (API.md "Checkpoints").
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// The checkpoint signer key file (`chatledger checkpoint-key --generate`); the embedded
    /// default generates `<data-dir>/checkpoint.key`.
    #[arg(long, env = "CHATLEDGER_CHECKPOINT_KEY_FILE")]
    pub checkpoint_key_file: Option<PathBuf>,
    /// The log's name: its checkpoints' origin line is `chatledger/<name>`.
    #[arg(long, env = "CHATLEDGER_LOG_NAME", default_value = "default")]
    pub log_name: String,
    /// Also write each signed checkpoint here as `<tree size>.note` (never overwritten).
    #[arg(long, env = "CHATLEDGER_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,
}

// The admin key must never reach a log.
impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("database", &self.database)
            .field(
                "replica_url",
                &self.replica_url.as_ref().map(|_| "<redacted>"),
            )
            .field("listen", &self.listen)
            .field("admin_key_file", &self.admin_key_file)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl ServeArgs {
    /// The serve arguments from the environment alone (`cargo run` with no subcommand).
    pub fn from_env() -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Wrapper::parse_from(["chatledger"]).serve
    }

    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.pool_size,
            acquire_timeout: Duration::from_millis(self.acquire_timeout_ms),
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            ..PoolSettings::default()
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            max_batch: self.max_batch,
            max_page_bytes: self.max_page_bytes.max(1),
        }
    }

    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            max_body_bytes: self.max_body_bytes,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }

    pub fn serve_settings(&self) -> ServeSettings {
        ServeSettings {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms.max(1)),
            max_connections: self.max_connections.max(1),
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            ..ServeSettings::default()
        }
    }
}
