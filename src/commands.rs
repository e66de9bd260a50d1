//! What each subcommand does.

use std::error::Error as StdError;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::access::{self, Accessor, ListAccess};
use crate::admin;
use crate::auth::{
    AdminKey, KeyRole, Scope, generate_key_file, load_checkpoint_key, read_key_file,
};
use crate::config::{
    AuditCommand, DatabaseArgs, HoldsCommand, KeysCommand, LogArgs, RetentionCommand, ServeArgs,
    TenantsCommand, VerifyArgs,
};
use crate::db::{self, Database, IfNoCluster, PoolSettings};
use crate::http;
use crate::ledger::audit::{self, Verification};
use crate::ledger::checkpoints::{self, LogSigner, Round, SequencerError};
use crate::ledger::erase::{Erasure, ErasureRequest};
use crate::ledger::export::{self, ExportVerdict};
use crate::ledger::holds::{self, AddToHold, PlaceHold, ReleaseHold};
use crate::ledger::retention;
use crate::ledger::search::{self, Search, SearchQuery};
use crate::ledger::{MessageRole, SessionId};
use crate::metrics;
use crate::tail;

pub type BoxError = Box<dyn StdError + Send + Sync>;
pub type CommandResult = Result<(), BoxError>;

/// `chatledger serve`: migrate, then serve until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> CommandResult {
    http::raise_open_file_limit();
    let database = Database::open(
        args.database.database_url.as_deref(),
        &args.database.data_dir,
        IfNoCluster::Create,
    )
    .await?;
    let result = serve_on(&database, &args).await;
    // Stop the embedded cluster even when serving failed.
    let closed = database.close().await;
    result?;
    Ok(closed?)
}

async fn serve_on(database: &Database, args: &ServeArgs) -> CommandResult {
    let embedded_dir = database
        .is_embedded()
        .then_some(args.database.data_dir.as_path());
    let (admin_key, generated) = AdminKey::load(
        args.admin_key_file.as_deref(),
        args.admin_key.as_deref(),
        embedded_dir,
    )?;
    if let Some(path) = generated {
        tracing::info!(path = %path.display(), "generated the admin key; read it from this file (mode 0600)");
    }
    let signer = log_signer(&args.log, embedded_dir)?;
    db::migrate(database.owner()).await?;
    let pool = database.runtime_pool(&args.pool_settings()).await?;
    let mut state = http::AppState::new(pool.clone(), args.limits(), admin_key)
        .trusting(args.trusted_proxy.clone())
        .bounded(args.max_concurrent_audits, args.max_body_bytes_in_flight)
        .streams_per_key(args.max_streams_per_key)
        .logging(signer.key.verifier_key().to_string());
    let replica = match &args.replica_url {
        Some(url) => Some(db::replica_pool(url, &args.pool_settings()).await?),
        None => None,
    };
    if let Some(replica) = &replica {
        state = state.reading_from(replica.clone(), args.pool_settings().statement_timeout);
    }
    let sweeper = tokio::spawn(sweep_periodically(
        pool.clone(),
        Duration::from_secs(args.retention_interval_secs.max(1)),
    ));
    let sequencer = tokio::spawn(sequence_periodically(
        database.owner_hosts().to_vec(),
        signer,
    ));
    let indexer = tokio::spawn(index_periodically(database.owner_hosts().to_vec()));
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, embedded = database.is_embedded(), "chatledger listening");
    let streams = state.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // A live tail never finishes by itself: end them all, so that draining can.
        streams.close_streams();
    };
    http::serve_with(
        listener,
        http::router(state, &args.http_settings()),
        shutdown,
        args.serve_settings(),
    )
    .await?;
    sweeper.abort();
    sequencer.abort();
    indexer.abort();
    pool.close().await;
    if let Some(replica) = replica {
        replica.close().await;
    }
    tracing::info!("chatledger stopped");
    Ok(())
}

/// Retention sweeps every `interval` (the first one after a minute, so a starting fleet does
/// not sweep at once); one server of a deployment sweeps at a time.
async fn sweep_periodically(pool: sqlx::PgPool, interval: Duration) {
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + interval.min(Duration::from_secs(60)),
        interval,
    );
    loop {
        ticks.tick().await;
        match retention::sweep(&pool, chrono::Utc::now(), None, false).await {
            Ok(report) => metrics::swept(&report),
            Err(error) => {
                tracing::warn!(%error, "retention sweep failed; retrying at the next interval")
            }
        }
    }
}

/// The checkpoint signer of `serve`: its key (generated into the embedded default's data dir),
/// origin line and checkpoint directory, which must exist.
fn log_signer(
    args: &LogArgs,
    embedded_dir: Option<&std::path::Path>,
) -> Result<LogSigner, BoxError> {
    let origin = crate::tlog::log_origin(&args.log_name)
        .map_err(|error| format!("--log-name {:?}: {error}", args.log_name))?;
    let (key, generated) =
        load_checkpoint_key(args.checkpoint_key_file.as_deref(), embedded_dir, &origin)?;
    if let Some(path) = generated {
        tracing::info!(path = %path.display(), verifier_key = %key.verifier_key(), "generated the checkpoint signing key (mode 0600)");
    }
    if let Some(dir) = &args.checkpoint_dir
        && !dir.is_dir()
    {
        return Err(format!("--checkpoint-dir {} is not a directory", dir.display()).into());
    }
    Ok(LogSigner {
        key,
        origin,
        checkpoint_dir: args.checkpoint_dir.clone(),
    })
}

/// How often the sequencer looks for pending leaves: well within API.md's "at least once a
/// second while leaves are pending".
const SEQUENCER_TICK: Duration = Duration::from_millis(200);

/// The sequencer: on its own owner connection, every tick, drains the queue into signed
/// checkpoints (one server at a time holds the lock per round) and copies new checkpoints to
/// the checkpoint directory. A tree that is not an extension of the last signed one is never
/// signed; every such round counts in `chatledger_sequencer_refusals_total`, and is logged as
/// an error at the first and then once every `REPEAT_LOG_INTERVAL` until an operator looks (a
/// checkpoint file it cannot write, likewise).
/// With several hosts it connects to the one that accepts writes, and looks again after losing
/// its connection (a promotion).
async fn sequence_periodically(hosts: Vec<sqlx::postgres::PgConnectOptions>, signer: LogSigner) {
    let verifier = signer.key.verifier_key();
    // The newest checkpoint outside the database, which every signed tree must extend; a
    // directory it cannot read stops the sequencer until it can.
    let read_published = || match signer.checkpoint_dir.as_deref() {
        Some(dir) => checkpoints::published_checkpoint(dir, &verifier),
        None => Ok(None),
    };
    let mut published = read_published();
    let mut primary = PrimaryConnection::new(hosts, "chatledger-sequencer", SEQUENCER_TICK);
    let mut refusals = Recurring::new("the sequencer refuses to sign", "the sequencer signs again");
    let mut file_trouble = Recurring::new(
        "cannot write a checkpoint file",
        "writes checkpoint files again",
    );
    loop {
        let db = primary.next().await;
        let mut broken = false;
        let anchor = match &published {
            Ok(anchor) => *anchor,
            Err(error) => {
                metrics::sequencer_refused();
                refusals.happened(error);
                published = read_published();
                continue;
            }
        };
        loop {
            match checkpoints::sequence_once(db, &signer, anchor, checkpoints::MAX_LEAVES_PER_ROUND)
                .await
            {
                Ok(Round::Signed { size, leaves }) => {
                    refusals.ended();
                    metrics::sequencer_accepts();
                    metrics::checkpoint_signed(size, leaves);
                    if (leaves as i64) < checkpoints::MAX_LEAVES_PER_ROUND {
                        break;
                    }
                }
                Ok(Round::Idle) => {
                    refusals.ended();
                    metrics::sequencer_accepts();
                    break;
                }
                Ok(Round::NotSequencer) => break,
                Err(SequencerError::Database(error)) => {
                    tracing::warn!(%error, "sequencer round failed; retrying");
                    broken = true;
                    break;
                }
                Err(error) => {
                    metrics::sequencer_refused();
                    refusals.happened(&error);
                    break;
                }
            }
        }
        if !broken && let Some(dir) = &signer.checkpoint_dir {
            match checkpoints::write_checkpoint_files(db, dir, anchor, &verifier).await {
                Ok(newest) => {
                    if newest.is_some() {
                        published = Ok(newest);
                    }
                    file_trouble.ended();
                }
                Err(SequencerError::Database(error)) => {
                    tracing::warn!(%error, "cannot read checkpoints to write; retrying");
                    broken = true;
                }
                // Another server signed what this one refuses to publish.
                Err(error @ SequencerError::NotAnExtension(_)) => {
                    metrics::sequencer_refused();
                    refusals.happened(&error);
                }
                Err(error) => {
                    metrics::checkpoint_file_failed();
                    file_trouble.happened(&error);
                }
            }
        }
        if broken {
            primary.lost();
        }
    }
}

/// How often trouble that recurs every round (a sequencer refusing to sign, a checkpoint file it
/// cannot write) is said again in the log.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Trouble in a row of rounds: the log hears of the first, then of the count every
/// `REPEAT_LOG_INTERVAL` rather than every tick, and of its end.
struct Recurring {
    what: &'static str,
    over: &'static str,
    rounds: u64,
    logged_at: Option<tokio::time::Instant>,
}

impl Recurring {
    fn new(what: &'static str, over: &'static str) -> Self {
        Self {
            what,
            over,
            rounds: 0,
            logged_at: None,
        }
    }

    fn happened(&mut self, error: &dyn std::fmt::Display) {
        self.rounds += 1;
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= REPEAT_LOG_INTERVAL)
        {
            tracing::error!(%error, rounds = self.rounds, "{}", self.what);
            self.logged_at = Some(tokio::time::Instant::now());
        }
    }

    fn ended(&mut self) {
        if self.rounds > 0 {
            tracing::info!(rounds = self.rounds, "{}", self.over);
            self.rounds = 0;
            self.logged_at = None;
        }
    }
}

/// How often a server indexes the search queue. A search indexes its own tenant's queue first,
/// so this bounds the work a search may find waiting, not what it finds.
const INDEXER_TICK: Duration = Duration::from_millis(100);

/// The search indexer: every tick, on its own owner connection, indexes the messages appends
/// queued (migration 0012) until the queue is empty. Servers share the queue (each round skips
/// what another server holds).
async fn index_periodically(hosts: Vec<sqlx::postgres::PgConnectOptions>) {
    let mut primary = PrimaryConnection::new(hosts, "chatledger-indexer", INDEXER_TICK);
    loop {
        let db = primary.next().await;
        loop {
            match search::index_some(db, search::INDEX_BATCH).await {
                Ok(taken) => {
                    metrics::search_indexed(taken);
                    if taken < i64::from(search::INDEX_BATCH) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "search indexing failed; retrying");
                    primary.lost();
                    break;
                }
            }
        }
    }
}

/// An owner connection to whichever host accepts writes, for a background task that works every
/// `period`: opened when first needed and again after it is lost (a promotion elsewhere).
struct PrimaryConnection {
    hosts: Vec<sqlx::postgres::PgConnectOptions>,
    task: &'static str,
    ticks: tokio::time::Interval,
    connection: Option<sqlx::PgConnection>,
}

impl PrimaryConnection {
    fn new(
        hosts: Vec<sqlx::postgres::PgConnectOptions>,
        task: &'static str,
        period: Duration,
    ) -> Self {
        let hosts = hosts
            .into_iter()
            .map(|owner| {
                owner
                    .application_name(task)
                    .options([("statement_timeout", "30000")])
            })
            .collect();
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        PrimaryConnection {
            hosts,
            task,
            ticks,
            connection: None,
        }
    }

    /// The connection at the next tick at which there is one (a failed connect is logged and
    /// tried again at the tick after).
    async fn next(&mut self) -> &mut sqlx::PgConnection {
        loop {
            self.ticks.tick().await;
            let db = match self.connection.take() {
                Some(db) => db,
                None => match connect_to_primary(&self.hosts).await {
                    Ok(db) => db,
                    Err(error) => {
                        tracing::warn!(%error, task = self.task, "cannot connect to the primary; retrying");
                        continue;
                    }
                },
            };
            return self.connection.insert(db);
        }
    }

    fn lost(&mut self) {
        self.connection = None;
    }
}

async fn connect_to_primary(
    hosts: &[sqlx::postgres::PgConnectOptions],
) -> Result<sqlx::PgConnection, crate::db::DbError> {
    use sqlx::ConnectOptions;
    let owner = match hosts {
        [one] => one.clone(),
        _ => db::failover::primary_of(hosts).await?,
    };
    owner.connect().await.map_err(crate::db::DbError::Connect)
}

/// `chatledger checkpoint-key`: writes a new signer key file, or prints a key file's verifier key.
pub fn checkpoint_key(
    generate: Option<&std::path::Path>,
    name: Option<&str>,
    key_file: Option<&std::path::Path>,
) -> CommandResult {
    if let (Some(path), Some(name)) = (generate, name) {
        generate_key_file(path, name)?;
        let key = read_key_file(path)?;
        println!("{}", key.verifier_key());
        return Ok(());
    }
    let path = key_file.ok_or("give --generate FILE --name NAME, or --key-file FILE")?;
    println!("{}", read_key_file(path)?.verifier_key());
    Ok(())
}

/// `chatledger migrate`.
pub async fn migrate(args: DatabaseArgs) -> CommandResult {
    let database = Database::open(
        args.database_url.as_deref(),
        &args.data_dir,
        IfNoCluster::Create,
    )
    .await?;
    let result = db::migrate(database.owner()).await;
    let closed = database.close().await;
    result?;
    closed?;
    println!("schema at migration {}", db::schema_version());
    Ok(())
}

/// Runs `work` on a migrated database with the runtime role, then closes the database.
async fn with_database<T, F, Fut>(args: &DatabaseArgs, work: F) -> Result<T, BoxError>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: Future<Output = Result<T, BoxError>>,
{
    let database = Database::open(
        args.database_url.as_deref(),
        &args.data_dir,
        IfNoCluster::Refuse,
    )
    .await?;
    let result = async {
        db::migrate(database.owner()).await?;
        let pool = db::runtime_pool(database.owner(), &PoolSettings::default()).await?;
        let result = work(pool.clone()).await;
        pool.close().await;
        result
    }
    .await;
    let closed = database.close().await;
    let value = result?;
    closed?;
    Ok(value)
}

/// `chatledger tenants ...`.
pub async fn tenants(command: TenantsCommand) -> CommandResult {
    match command {
        TenantsCommand::Create { name, database } => {
            with_database(&database, |pool| async move {
                let tenant = admin::create_tenant(&pool, &Accessor::operator(), &name).await?;
                println!("created tenant {}", tenant.name);
                Ok(())
            })
            .await
        }
    }
}

/// `chatledger keys ...`.
pub async fn keys(command: KeysCommand) -> CommandResult {
    match command {
        KeysCommand::Create {
            tenant,
            role,
            label,
            database,
        } => {
            let role = KeyRole::parse(&role).ok_or("--role must be writer, reader or auditor")?;
            with_database(&database, |pool| async move {
                let key = admin::create_key(
                    &pool,
                    &Accessor::operator(),
                    &tenant,
                    role,
                    label.as_deref(),
                )
                .await?;
                eprintln!(
                    "created {} key {} for tenant {}; the key is shown only now:",
                    key.info.role.as_str(),
                    key.info.id,
                    key.info.tenant
                );
                println!("{}", key.secret);
                Ok(())
            })
            .await
        }
        KeysCommand::List { database } => {
            with_database(&database, |pool| async move {
                println!(
                    "{:<30}  {:<20}  {:<8}  {:<27}  {:<27}  label",
                    "id", "tenant", "role", "created_at", "revoked_at"
                );
                for key in admin::list_keys(&pool).await? {
                    println!(
                        "{:<30}  {:<20}  {:<8}  {:<27}  {:<27}  {}",
                        key.id,
                        key.tenant,
                        key.role.as_str(),
                        key.created_at,
                        key.revoked_at
                            .map(|at| at.to_string())
                            .unwrap_or_else(|| "-".to_owned()),
                        key.label.unwrap_or_default()
                    );
                }
                Ok(())
            })
            .await
        }
        KeysCommand::Revoke { id, database } => {
            with_database(&database, |pool| async move {
                match admin::revoke_key(&pool, &Accessor::operator(), &id).await {
                    Ok(true) => println!("revoked {id}"),
                    Ok(false) => println!("{id} was revoked already"),
                    Err(crate::error::Error::NotFound) => return Err(format!("no key {id}").into()),
                    Err(error) => return Err(error.into()),
                }
                Ok(())
            })
            .await
        }
    }
}

/// `chatledger audit ...`: the compliance reads, as the operator, recorded like any other.
pub async fn audit(command: AuditCommand) -> CommandResult {
    let accessor = Accessor::operator();
    match command {
        AuditCommand::Search {
            tenant,
            q,
            session,
            role,
            author,
            limit,
            database,
        } => {
            with_database(&database, |pool| async move {
                let tenant = admin::tenant_by_name(&mut *pool.acquire().await?, &tenant).await?;
                let query = SearchQuery {
                    terms: search::parse_terms(q.as_deref().unwrap_or(""))?,
                    session_id: session.as_deref().map(SessionId::parse).transpose()?,
                    role: role.map(MessageRole::try_from).transpose()?,
                    author,
                    limit: limit.clamp(1, 10_000),
                    ..SearchQuery::default()
                };
                let scope = Scope::operator(&tenant);
                let hits =
                    access::run_recorded(&pool, scope, true, &accessor, Search(query)).await?;
                for hit in &hits.hits {
                    let line = serde_json::json!({
                        "session_id": hit.session_id,
                        "seq": hit.entry.seq,
                        "created_at": hit.entry.created_at,
                        "role": hit.entry.role,
                        "author": hit.entry.author,
                        "snippet": hit.snippet,
                    });
                    println!("{line}");
                }
                eprintln!("{} hits", hits.hits.len());
                Ok(())
            })
            .await
        }
        AuditCommand::Access {
            tenant,
            session,
            actor,
            limit,
            database,
        } => {
            with_database(&database, |pool| async move {
                let tenant = admin::tenant_by_name(&mut *pool.acquire().await?, &tenant).await?;
                let filter = access::Filter {
                    session_id: session
                        .as_deref()
                        .map(SessionId::parse)
                        .transpose()?
                        .map(|id| id.as_str().to_owned()),
                    actor,
                    limit: limit.clamp(1, 100_000),
                    ..access::Filter::default()
                };
                let scope = Scope::operator(&tenant);
                let records =
                    access::run_recorded(&pool, scope, true, &accessor, ListAccess(filter)).await?;
                for record in records.iter().take(limit.clamp(1, 100_000) as usize) {
                    println!("{}", serde_json::to_string(record)?);
                }
                eprintln!("{} records", records.len());
                Ok(())
            })
            .await
        }
    }
}

/// `chatledger holds ...`, as the operator.
pub async fn holds(command: HoldsCommand) -> CommandResult {
    let accessor = Accessor::operator();
    let (tenant, database) = match &command {
        HoldsCommand::List { tenant, database }
        | HoldsCommand::Place {
            tenant, database, ..
        }
        | HoldsCommand::Add {
            tenant, database, ..
        }
        | HoldsCommand::Release {
            tenant, database, ..
        } => (tenant.clone(), database.clone()),
    };
    with_database(&database, |pool| async move {
        let tenant = admin::tenant_by_name(&mut *pool.acquire().await?, &tenant).await?;
        let scope = Scope::operator(&tenant);
        let operator = accessor.actor.id().to_owned();
        let changed = match command {
            HoldsCommand::List { .. } => {
                for hold in holds::list(&mut *pool.begin().await?, scope, None).await? {
                    println!("{}", serde_json::to_string(&hold)?);
                }
                return Ok(());
            }
            HoldsCommand::Place {
                name,
                reason,
                sessions,
                ..
            } => {
                let work =
                    PlaceHold::new(&name, &reason, holds::session_ids(&sessions)?, &operator)?;
                access::run_recorded(&pool, scope, true, &accessor, work).await?
            }
            HoldsCommand::Add { id, sessions, .. } => {
                let work = AddToHold {
                    hold_id: id,
                    session_ids: holds::session_ids(&sessions)?,
                    added_by: operator,
                };
                access::run_recorded(&pool, scope, true, &accessor, work)
                    .await?
                    .hold
            }
            HoldsCommand::Release { id, .. } => {
                let work = ReleaseHold {
                    hold_id: id,
                    released_by: operator,
                };
                access::run_recorded(&pool, scope, true, &accessor, work).await?
            }
        };
        println!("{}", serde_json::to_string(&changed)?);
        Ok(())
    })
    .await
}

/// `chatledger erase`, as the operator.
pub async fn erase(
    tenant: &str,
    session: &str,
    reason: String,
    through_seq: Option<i64>,
    database: &DatabaseArgs,
) -> CommandResult {
    let accessor = Accessor::operator();
    with_database(database, |pool| async move {
        let tenant = admin::tenant_by_name(&mut *pool.acquire().await?, tenant).await?;
        let request = ErasureRequest::new(SessionId::parse(session)?, through_seq, reason, None)?;
        let work = Erasure {
            request,
            author: accessor.actor.id().to_owned(),
        };
        let erased =
            access::run_recorded(&pool, Scope::operator(&tenant), true, &accessor, work).await?;
        tail::announce_now(&pool, tail::Advance::of(tenant.id, &erased.appended)).await;
        println!(
            "erased {} entries of {}/{session} through seq {}; erasure entry seq {}",
            erased.erased_count, tenant.name, erased.erased_through_seq, erased.appended.first_seq
        );
        Ok(())
    })
    .await
}

/// `chatledger retention run`.
pub async fn retention(command: RetentionCommand) -> CommandResult {
    let RetentionCommand::Run {
        tenant,
        dry_run,
        database,
    } = command;
    with_database(&database, |pool| async move {
        if let Some(name) = &tenant {
            // A mistyped tenant is an error, not a sweep that found nothing due.
            admin::tenant_by_name(&mut *pool.acquire().await?, name).await?;
        }
        let report =
            retention::sweep(&pool, chrono::Utc::now(), tenant.as_deref(), dry_run).await?;
        if !report.ran {
            return Err("another chatledger process is sweeping; try again later".into());
        }
        let verb = if dry_run { "due" } else { "erased" };
        println!(
            "{verb}: {} payloads in {} erasures; {} sessions held",
            report.erased_entries, report.erasures, report.held_sessions
        );
        Ok(())
    })
    .await
}

/// `chatledger verify`: true when every chain checked is intact. Broken sessions are listed
/// with their first bad seq as they are found; sessions are streamed, never all loaded.
pub async fn verify(args: VerifyArgs) -> Result<bool, BoxError> {
    let log_intact = if args.checkpoints {
        verify_log(&args).await?
    } else {
        true
    };
    if args.session.is_none() && !args.all {
        return Ok(log_intact);
    }
    Ok(verify_chains(args).await? && log_intact)
}

/// `chatledger verify --checkpoints`: the log against the sessions and the checkpoints.
async fn verify_log(args: &VerifyArgs) -> Result<bool, BoxError> {
    use sqlx::ConnectOptions;
    let log_key = args
        .log_key
        .as_deref()
        .map(|key| crate::tlog::VerifierKey::parse(key.trim()))
        .transpose()
        .map_err(|error| format!("--log-key: {error}"))?;
    if let Some(dir) = &args.checkpoint_dir {
        std::fs::read_dir(dir)
            .map_err(|error| format!("--checkpoint-dir {}: {error}", dir.display()))?;
    }
    let database = Database::open(
        args.database.database_url.as_deref(),
        &args.database.data_dir,
        IfNoCluster::Refuse,
    )
    .await?;
    let result = async {
        db::migrate(database.owner()).await?;
        let mut owner = database.owner().connect().await?;
        let audit =
            checkpoints::audit_log(&mut owner, args.checkpoint_dir.as_deref(), log_key.as_ref())
                .await?;
        Ok::<_, BoxError>(audit)
    }
    .await;
    database.close().await?;
    let audit = result?;
    for (session, why) in &audit.sessions {
        println!("{session}: NOT AS LOGGED: {why}");
    }
    for problem in &audit.log {
        println!("log: {problem}");
    }
    println!(
        "checked the log: {} leaves, {} stored checkpoints, {} checkpoint files: {}",
        audit.leaves,
        audit.checkpoints_checked,
        audit.files_checked,
        if audit.intact() {
            "intact".to_owned()
        } else {
            format!(
                "{} sessions not as logged, {} log problems",
                audit.sessions.len(),
                audit.log.len()
            )
        }
    );
    Ok(audit.intact())
}

async fn verify_chains(args: VerifyArgs) -> Result<bool, BoxError> {
    with_database(&args.database, |pool| async move {
        let mut tally = Tally::default();
        if let (Some(session), Some(tenant)) = (&args.session, &args.tenant) {
            let tenant = admin::tenant_by_name(&mut *pool.acquire().await?, tenant).await?;
            let verification = audit::verify_session(
                &pool,
                Scope::operator(&tenant),
                &SessionId::parse(session)?,
                PAGE_BYTES,
            )
            .await?;
            tally.report(&tenant.name, session, &verification, true);
            return Ok(tally.broken == 0);
        }
        let mut after_tenant = String::new();
        loop {
            let names = match &args.tenant {
                Some(tenant) => vec![tenant.clone()],
                None => admin::tenant_names(&pool, &after_tenant, PAGE).await?,
            };
            for name in &names {
                let tenant = admin::tenant_by_name(&mut *pool.acquire().await?, name).await?;
                let mut after: Option<String> = None;
                loop {
                    let ids = audit::session_ids(
                        &mut *pool.acquire().await?,
                        Scope::operator(&tenant),
                        after.as_deref(),
                        PAGE,
                    )
                    .await?;
                    for id in &ids {
                        let verification = audit::verify_session(
                            &pool,
                            Scope::operator(&tenant),
                            &SessionId::parse(id)?,
                            PAGE_BYTES,
                        )
                        .await?;
                        tally.report(name, id, &verification, false);
                    }
                    match ids.last() {
                        Some(last) if ids.len() as i64 == PAGE => after = Some(last.clone()),
                        _ => break,
                    }
                }
            }
            match names.last() {
                Some(last) if args.tenant.is_none() && names.len() as i64 == PAGE => {
                    after_tenant = last.clone()
                }
                _ => break,
            }
        }
        println!(
            "verified {} sessions: {} intact, {} broken",
            tally.checked,
            tally.checked - tally.broken,
            tally.broken
        );
        Ok(tally.broken == 0)
    })
    .await
}

/// Tenants and sessions read per page by `verify --all`.
const PAGE: i64 = 1000;
/// Bytes of entries per page a command's verify reads at most.
const PAGE_BYTES: i64 = 8 * 1024 * 1024;

#[derive(Default)]
struct Tally {
    checked: u64,
    broken: u64,
}

impl Tally {
    fn report(&mut self, tenant: &str, session: &str, verification: &Verification, verbose: bool) {
        self.checked += 1;
        match verification {
            Ok(verified) if verbose => println!(
                "{tenant}/{session}: intact through seq {}, head {}, {} erased entries",
                verified.verified_through_seq,
                hex::encode(verified.head_hash),
                verified.erased_entries
            ),
            Ok(_) => {}
            Err(found) => {
                self.broken += 1;
                println!(
                    "{tenant}/{session}: BROKEN at seq {} ({})",
                    found.first_bad_seq,
                    found.reason.as_str()
                );
            }
        }
    }
}

/// `chatledger verify-export`: true when the export is intact.
pub fn verify_export(
    file: &std::path::Path,
    expect_head: Option<&str>,
    log_key: Option<&str>,
) -> Result<bool, BoxError> {
    let log_key = log_key
        .map(|key| crate::tlog::VerifierKey::parse(key.trim()))
        .transpose()
        .map_err(|error| format!("--log-key: {error}"))?;
    let log_key = log_key.as_ref();
    let expect_head = expect_head
        .map(|hash| {
            hex::decode(hash.trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or("--expect-head: not a head hash (64 hex digits)")
        })
        .transpose()?;
    let expect_head = expect_head.as_ref();
    let verdict = if file.as_os_str() == "-" {
        export::verify_export(std::io::stdin().lock(), expect_head, log_key)?
    } else {
        let opened = std::fs::File::open(file)
            .map_err(|error| format!("cannot open {}: {error}", file.display()))?;
        export::verify_export(std::io::BufReader::new(opened), expect_head, log_key)?
    };
    Ok(match verdict {
        ExportVerdict::Intact {
            tenant,
            session_id,
            verified,
        } => {
            println!(
                "intact: {tenant}/{session_id} through seq {}, head {}, {} erased entries",
                verified.verified_through_seq,
                hex::encode(verified.head_hash),
                verified.erased_entries
            );
            true
        }
        ExportVerdict::Broken(why) => {
            println!("BROKEN: {why}");
            false
        }
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
