//! The embedded default database: a private PostgreSQL cluster in `<data-dir>/pg`, reachable
//! only through a unix socket, run as an unprivileged account and bootstrapped with the
//! non-superuser owner role that `database_url()` names.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection};
use tokio::process::Command;

/// Role that owns the schema and runs migrations; deliberately not a superuser.
const OWNER_ROLE: &str = "chatledger_owner";
/// Database created for chatledger inside the cluster.
const DATABASE: &str = "chatledger";
/// Cluster superuser, used only to bootstrap the owner role and database.
const SUPERUSER: &str = "postgres";
/// OS account the cluster runs as when chatledger runs as root.
const CLUSTER_ACCOUNT: &str = "postgres";
const PORT: u16 = 5432;
/// Longest unix socket path the kernel accepts (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
const SOCKET_FILE: &str = ".s.PGSQL.5432";
/// Settings file that chatledger owns inside the cluster, included from postgresql.conf.
const SETTINGS_FILE: &str = "chatledger.conf";
const INCLUDE_LINE: &str = "include 'chatledger.conf'";
const TIMEOUT: Duration = Duration::from_secs(60);
const INITDB_ARGS: [&str; 6] = [
    "-U",
    SUPERUSER,
    "--auth-local=trust",
    "--auth-host=reject",
    "--encoding=UTF8",
    "--locale=C",
];

/// Errors from initialising, starting, bootstrapping or stopping the embedded cluster.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No directory with both `initdb` and `pg_ctl` was found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in PATH, in `pg_config --bindir` \
         or under /usr/lib/postgresql/*/bin; install them (Debian/Ubuntu: `apt-get install \
         postgresql`, Fedora: `dnf install postgresql-server`, macOS: `brew install \
         postgresql@16`) or pass --database-url to use an existing server"
    )]
    BinariesNotFound,
    /// Running as root, but there is no unprivileged account to run PostgreSQL as.
    #[error(
        "running as root, but the account `{CLUSTER_ACCOUNT}` that the embedded PostgreSQL must \
         run as does not exist (PostgreSQL refuses to run as root); create it (`useradd --system \
         --home-dir /var/lib/postgresql --shell /usr/sbin/nologin {CLUSTER_ACCOUNT}`), run \
         chatledger as an unprivileged user, or pass --database-url"
    )]
    NoClusterAccount,
    /// The account database could not be read.
    #[error("could not look up OS account `{name}`: {source}")]
    AccountLookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    /// A path cannot be written into postgresql.conf or a connection URL.
    #[error(
        "{0} is not valid UTF-8 or contains control characters; choose a --data-dir with a \
         plain path"
    )]
    UnsupportedPath(PathBuf),
    /// A filesystem operation failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The cluster account cannot traverse a parent directory of the data directory.
    #[error(
        "the account `{user}` that runs PostgreSQL cannot reach {target}: it has no search \
         permission on {blocking}; fix it with `chmod o+x {blocking}` or `setfacl -m \
         u:{user}:x {blocking}`, or choose a --data-dir under a reachable path such as \
         /var/lib/chatledger"
    )]
    Unreachable {
        user: String,
        target: PathBuf,
        blocking: PathBuf,
    },
    /// The cluster directory belongs to another account than the one the cluster runs as.
    #[error(
        "{path} is owned by uid {found}, but the embedded PostgreSQL runs as `{user}` (uid \
         {expected}); run chatledger as the account that created it (as root it runs \
         PostgreSQL as `{CLUSTER_ACCOUNT}`), or `chown -R {user} {path}`"
    )]
    WrongOwner {
        path: PathBuf,
        user: String,
        expected: u32,
        found: u32,
    },
    /// `<data-dir>/pg` exists but holds something other than a PostgreSQL cluster.
    #[error(
        "{0} exists but is not a PostgreSQL data directory (no PG_VERSION); move it away or \
         choose another --data-dir"
    )]
    NotACluster(PathBuf),
    /// The fallback socket directory exists but cannot be trusted.
    #[error(
        "socket directory {path} exists but {problem}; remove it (it is only ever created by \
         chatledger) and start again"
    )]
    UnsafeSocketDir { path: PathBuf, problem: String },
    /// A helper program could not be started.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// A helper program ran and failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
    /// The server did not accept connections in time.
    #[error(
        "PostgreSQL for {data_dir} did not accept connections on {socket_dir} within {}s: \
         {source}; see {data_dir}/log/postgres.log",
        TIMEOUT.as_secs()
    )]
    NotAccepting {
        data_dir: PathBuf,
        socket_dir: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    /// The server exited right after starting.
    #[error("PostgreSQL for {0} exited right after starting; see {0}/log/postgres.log")]
    Exited(PathBuf),
    /// Creating the owner role or the database failed.
    #[error("could not create the `{OWNER_ROLE}` role and `{DATABASE}` database: {0}")]
    Bootstrap(#[source] sqlx::Error),
}

/// A running embedded cluster, started by this handle or found already running.
///
/// Dropping the handle leaves the server running; call [`EmbeddedCluster::stop`] on shutdown.
#[derive(Debug)]
pub struct EmbeddedCluster {
    pg_dir: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    account: Account,
    started_here: bool,
}

impl EmbeddedCluster {
    /// Initialise `<data_dir>/pg` on first use (or reuse it), start it if not running, wait
    /// until it accepts connections, ensure the owner role and database exist.
    /// Returns a handle.
    pub async fn start(data_dir: &Path) -> Result<EmbeddedCluster, EmbeddedError> {
        // The filesystem steps are a few small synchronous calls made once at startup.
        let bin_dir = find_bin_dir().await?;
        let account = Account::resolve()?;
        let data_dir = prepare_data_dir(data_dir)?;
        let pg_dir = data_dir.join("pg");
        plain_str(&pg_dir)?;
        if account.switches_user {
            account.check_reachable(&data_dir, &pg_dir).await?;
        }

        let socket_dir = choose_socket_dir(&pg_dir);
        if socket_dir != pg_dir {
            ensure_socket_dir(&socket_dir, &account)?;
        }

        let mut cluster = EmbeddedCluster {
            pg_dir,
            socket_dir,
            bin_dir,
            account,
            started_here: false,
        };
        if !cluster.is_initialised()? {
            cluster.initdb(&data_dir).await?;
        }
        ensure_owned_dir(&cluster.pg_dir.join("log"), &cluster.account, 0o700)?;
        cluster.write_settings()?;

        // A server found running may still be starting up, or may be a dying one whose pid
        // file is not stale yet; `connect_superuser` tells the two apart.
        let mut conn = None;
        if cluster.is_running().await? {
            conn = cluster.connect_superuser().await?;
        }
        if conn.is_none() {
            cluster.pg_ctl_start().await?;
            cluster.started_here = true;
        }
        tracing::info!(
            data_dir = %cluster.pg_dir.display(),
            socket_dir = %cluster.socket_dir.display(),
            started_here = cluster.started_here,
            "embedded PostgreSQL is up"
        );

        match cluster.bootstrap(conn).await {
            Ok(()) => Ok(cluster),
            Err(err) => {
                if let Err(stop_err) = cluster.stop_if_started().await {
                    tracing::warn!(error = %stop_err, "could not stop embedded PostgreSQL");
                }
                Err(err)
            }
        }
    }

    /// Connection URL for the owner role (not a superuser), over the unix socket.
    pub fn database_url(&self) -> String {
        // Socket paths are validated as plain UTF-8 in `start`, so nothing is lost here.
        owner_url(&self.socket_dir.to_string_lossy())
    }

    /// True when this handle started the postmaster (so it must stop it).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Stop the cluster (`pg_ctl stop -m fast`, waiting for it) if this handle started it;
    /// otherwise a no-op.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        self.stop_if_started().await
    }

    async fn stop_if_started(&self) -> Result<(), EmbeddedError> {
        if !self.started_here {
            return Ok(());
        }
        let timeout = TIMEOUT.as_secs().to_string();
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", &timeout])
            .await
            .map(drop)
    }

    fn is_initialised(&self) -> Result<bool, EmbeddedError> {
        let meta = match fs::metadata(&self.pg_dir) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(io_error("inspect", &self.pg_dir, source)),
        };
        if meta.uid() != self.account.uid.as_raw() {
            return Err(EmbeddedError::WrongOwner {
                path: self.pg_dir.clone(),
                user: self.account.name.clone(),
                expected: self.account.uid.as_raw(),
                found: meta.uid(),
            });
        }
        let version_file = self.pg_dir.join("PG_VERSION");
        match fs::symlink_metadata(&version_file) {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(io_error("inspect", &version_file, source)),
        }
    }

    /// Runs initdb in a staging directory and renames it into place, so an interrupted first
    /// start never leaves a half-initialised cluster behind.
    async fn initdb(&self, data_dir: &Path) -> Result<(), EmbeddedError> {
        match fs::read_dir(&self.pg_dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(EmbeddedError::NotACluster(self.pg_dir.clone()));
                }
                fs::remove_dir(&self.pg_dir)
                    .map_err(|source| io_error("remove empty directory", &self.pg_dir, source))?;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error("read", &self.pg_dir, source)),
        }

        let staging = data_dir.join("pg.initdb");
        match fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error("remove leftover", &staging, source)),
        }
        ensure_owned_dir(&staging, &self.account, 0o700)?;

        tracing::info!(data_dir = %self.pg_dir.display(), "initialising embedded PostgreSQL");
        let mut cmd = self.account.command(self.bin_dir.join("initdb"));
        cmd.arg("-D").arg(&staging).args(INITDB_ARGS);
        run_checked(cmd).await?;
        fs::rename(&staging, &self.pg_dir)
            .map_err(|source| io_error("rename into place", &staging, source))
    }

    /// Rewritten on every start because the socket directory follows the data directory.
    fn write_settings(&self) -> Result<(), EmbeddedError> {
        let settings = render_settings(&self.socket_dir.to_string_lossy());
        let target = self.pg_dir.join(SETTINGS_FILE);
        let temp = self.pg_dir.join(format!("{SETTINGS_FILE}.tmp"));
        fs::write(&temp, settings).map_err(|source| io_error("write", &temp, source))?;
        self.account.give(&temp)?;
        fs::rename(&temp, &target).map_err(|source| io_error("replace", &target, source))?;

        let conf = self.pg_dir.join("postgresql.conf");
        let current =
            fs::read_to_string(&conf).map_err(|source| io_error("read", &conf, source))?;
        if !current.lines().any(|line| line.trim() == INCLUDE_LINE) {
            let mut file = OpenOptions::new()
                .append(true)
                .open(&conf)
                .map_err(|source| io_error("open", &conf, source))?;
            writeln!(file, "\n# Settings managed by chatledger.\n{INCLUDE_LINE}")
                .map_err(|source| io_error("append to", &conf, source))?;
        }
        Ok(())
    }

    async fn is_running(&self) -> Result<bool, EmbeddedError> {
        let pid_file = self.pg_dir.join("postmaster.pid");
        match fs::symlink_metadata(&pid_file) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(io_error("inspect", &pid_file, source)),
        }
        // Exit status 3 means "not running": the pid file is stale, and the postmaster
        // overwrites stale pid files itself on start.
        let mut cmd = self.pg_ctl_command(&["status"]);
        let output = spawn_output(&mut cmd).await?;
        Ok(output.status.success())
    }

    async fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        let log_path = self.pg_dir.join("log").join("postgres.log");
        let log = log_path.to_string_lossy();
        let timeout = TIMEOUT.as_secs().to_string();
        match self
            .pg_ctl(&["-l", &log, "-w", "-t", &timeout, "start"])
            .await
        {
            Ok(_) => Ok(()),
            Err(EmbeddedError::CommandFailed {
                command,
                status,
                output,
            }) => Err(EmbeddedError::CommandFailed {
                command,
                status,
                output: format!(
                    "{output}\nlast lines of {log}:\n{}",
                    log_tail(&log_path, 20)
                ),
            }),
            Err(err) => Err(err),
        }
    }

    fn pg_ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.account.command(self.bin_dir.join("pg_ctl"));
        cmd.arg("-D").arg(&self.pg_dir).args(args);
        cmd
    }

    async fn pg_ctl(&self, args: &[&str]) -> Result<Output, EmbeddedError> {
        run_checked(self.pg_ctl_command(args)).await
    }

    /// Connects as the superuser, retrying while the server starts up; `None` once the
    /// postmaster turns out not to be running (checked about once a second).
    async fn connect_superuser(&self) -> Result<Option<PgConnection>, EmbeddedError> {
        let options = PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database("postgres")
            .ssl_mode(PgSslMode::Disable)
            .application_name("chatledger-bootstrap")
            .disable_statement_logging();
        let deadline = Instant::now() + TIMEOUT;
        let mut next_liveness_check = Instant::now() + Duration::from_secs(1);
        loop {
            match PgConnection::connect_with(&options).await {
                Ok(conn) => return Ok(Some(conn)),
                Err(source) if Instant::now() >= deadline => {
                    return Err(EmbeddedError::NotAccepting {
                        data_dir: self.pg_dir.clone(),
                        socket_dir: self.socket_dir.clone(),
                        source,
                    });
                }
                Err(_) => {}
            }
            if Instant::now() >= next_liveness_check {
                if !self.is_running().await? {
                    return Ok(None);
                }
                next_liveness_check = Instant::now() + Duration::from_secs(1);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn bootstrap(&self, conn: Option<PgConnection>) -> Result<(), EmbeddedError> {
        let mut conn = match conn {
            Some(conn) => conn,
            None => self
                .connect_superuser()
                .await?
                .ok_or_else(|| EmbeddedError::Exited(self.pg_dir.clone()))?,
        };
        let result = ensure_owner_and_database(&mut conn).await;
        if let Err(err) = conn.close().await {
            tracing::debug!(error = %err, "closing the bootstrap connection failed");
        }
        result.map_err(EmbeddedError::Bootstrap)
    }
}

async fn ensure_owner_and_database(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // Re-applied on every start so an owner role altered by hand is brought back in line.
    let ensure_role = format!(
        "DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
                ALTER ROLE {OWNER_ROLE} LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS;
            ELSE
                CREATE ROLE {OWNER_ROLE} LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS;
            END IF;
        END $$"
    );
    sqlx::raw_sql(&ensure_role).execute(&mut *conn).await?;

    let owner: Option<String> = sqlx::query_scalar(
        "SELECT pg_catalog.pg_get_userbyid(datdba)::text FROM pg_catalog.pg_database \
         WHERE datname = $1",
    )
    .bind(DATABASE)
    .fetch_optional(&mut *conn)
    .await?;
    match owner.as_deref() {
        None => {
            let create = format!("CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}");
            match sqlx::raw_sql(&create).execute(&mut *conn).await {
                Ok(_) => {}
                // Another process created it between our check and now.
                Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P04") => {}
                Err(err) => return Err(err),
            }
        }
        Some(OWNER_ROLE) => {}
        Some(_) => {
            let alter = format!("ALTER DATABASE {DATABASE} OWNER TO {OWNER_ROLE}");
            sqlx::raw_sql(&alter).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// The OS account that runs initdb, pg_ctl and so the server.
#[derive(Debug)]
struct Account {
    name: String,
    uid: Uid,
    gid: Gid,
    /// True when running as root: everything PostgreSQL touches is handed to `uid`.
    switches_user: bool,
}

impl Account {
    fn resolve() -> Result<Account, EmbeddedError> {
        let euid = Uid::effective();
        if euid.is_root() {
            let user = User::from_name(CLUSTER_ACCOUNT)
                .map_err(|source| EmbeddedError::AccountLookup {
                    name: CLUSTER_ACCOUNT.to_owned(),
                    source,
                })?
                .ok_or(EmbeddedError::NoClusterAccount)?;
            return Ok(Account {
                name: user.name,
                uid: user.uid,
                gid: user.gid,
                switches_user: true,
            });
        }
        let name = match User::from_uid(euid) {
            Ok(Some(user)) => user.name,
            _ => euid.to_string(),
        };
        Ok(Account {
            name,
            uid: euid,
            gid: Gid::effective(),
            switches_user: false,
        })
    }

    /// A command run as this account, from `/`, with a minimal environment: the postmaster
    /// inherits it, and must not see chatledger's secrets or its working directory.
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for key in ["PATH", "TZ"] {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        if self.switches_user {
            cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
        cmd
    }

    fn give(&self, path: &Path) -> Result<(), EmbeddedError> {
        if self.switches_user {
            std::os::unix::fs::chown(path, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
                .map_err(|source| io_error("change owner of", path, source))?;
        }
        Ok(())
    }

    async fn can_enter(&self, dir: &Path) -> Result<bool, EmbeddedError> {
        let mut cmd = self.command("/bin/sh");
        cmd.args(["-c", "cd -- \"$1\"", "sh"]).arg(dir);
        Ok(spawn_output(&mut cmd).await?.status.success())
    }

    /// Asks the kernel (by trying as that account) rather than reading mode bits, so ACLs
    /// and group memberships count.
    async fn check_reachable(&self, parent: &Path, target: &Path) -> Result<(), EmbeddedError> {
        if self.can_enter(parent).await? {
            return Ok(());
        }
        let mut blocking = parent.to_path_buf();
        let ancestors: Vec<&Path> = parent.ancestors().collect();
        for dir in ancestors.into_iter().rev() {
            if !self.can_enter(dir).await? {
                blocking = dir.to_path_buf();
                break;
            }
        }
        Err(EmbeddedError::Unreachable {
            user: self.name.clone(),
            target: target.to_path_buf(),
            blocking,
        })
    }
}

/// Where `initdb` and `pg_ctl` live: `$PATH`, then `pg_config --bindir`, then the newest
/// `/usr/lib/postgresql/*/bin`.
async fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|dir| has_server_binaries(dir))
    {
        return Ok(dir);
    }
    if let Ok(output) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .await
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server_binaries(&dir) {
            return Ok(dir);
        }
    }
    let versions = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned));
    newest_version(versions)
        .map(|version| Path::new("/usr/lib/postgresql").join(version).join("bin"))
        .filter(|dir| has_server_binaries(dir))
        .ok_or(EmbeddedError::BinariesNotFound)
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl"].iter().all(|name| {
        fs::metadata(dir.join(name))
            .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Picks the highest version among directory names like `9.6`, `15`, `16`.
fn newest_version(names: impl IntoIterator<Item = String>) -> Option<String> {
    names
        .into_iter()
        .filter_map(|name| {
            let version: Result<Vec<u32>, _> = name.split('.').map(str::parse).collect();
            version.ok().map(|version| (version, name))
        })
        .max()
        .map(|(_, name)| name)
}

/// Creates `data_dir` (each missing component 0755) and returns its canonical path.
fn prepare_data_dir(data_dir: &Path) -> Result<PathBuf, EmbeddedError> {
    let mut missing = Vec::new();
    let mut existing = data_dir;
    while !existing.as_os_str().is_empty() && fs::symlink_metadata(existing).is_err() {
        missing.push(existing);
        existing = existing.parent().unwrap_or(Path::new(""));
    }
    for dir in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => {
                // The umask may have narrowed the mode; the cluster account must traverse it.
                fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                    .map_err(|source| io_error("set permissions of", dir, source))?;
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(io_error("create directory", dir, source)),
        }
    }
    fs::canonicalize(data_dir).map_err(|source| io_error("resolve", data_dir, source))
}

/// Creates `dir` owned by the cluster account, or checks that an existing one is.
fn ensure_owned_dir(dir: &Path, account: &Account, mode: u32) -> Result<(), EmbeddedError> {
    match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => account.give(dir),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::metadata(dir).map_err(|source| io_error("inspect", dir, source))?;
            if meta.uid() == account.uid.as_raw() {
                Ok(())
            } else {
                Err(EmbeddedError::WrongOwner {
                    path: dir.to_path_buf(),
                    user: account.name.clone(),
                    expected: account.uid.as_raw(),
                    found: meta.uid(),
                })
            }
        }
        Err(source) => Err(io_error("create directory", dir, source)),
    }
}

/// The fallback socket directory lives in world-writable /tmp, so an existing one is only
/// used if it is a real directory owned by the cluster account.
fn ensure_socket_dir(dir: &Path, account: &Account) -> Result<(), EmbeddedError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return account.give(dir),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(io_error("create directory", dir, source)),
    }
    let meta = fs::symlink_metadata(dir).map_err(|source| io_error("inspect", dir, source))?;
    let problem = if meta.file_type().is_symlink() {
        "is a symbolic link".to_owned()
    } else if !meta.is_dir() {
        "is not a directory".to_owned()
    } else if meta.uid() != account.uid.as_raw() {
        format!("is owned by uid {}, not by `{}`", meta.uid(), account.name)
    } else {
        return Ok(());
    };
    Err(EmbeddedError::UnsafeSocketDir {
        path: dir.to_path_buf(),
        problem,
    })
}

/// `pg_dir` itself when its socket path fits the kernel limit, else a short directory in
/// /tmp derived from the cluster path.
fn choose_socket_dir(pg_dir: &Path) -> PathBuf {
    if socket_path_fits(pg_dir) {
        return pg_dir.to_path_buf();
    }
    let digest = Sha256::digest(pg_dir.as_os_str().as_encoded_bytes());
    let hash = hex::encode(digest);
    PathBuf::from(format!("/tmp/chatledger-{}", &hash[..12]))
}

fn socket_path_fits(dir: &Path) -> bool {
    dir.as_os_str().len() + 1 + SOCKET_FILE.len() <= MAX_SOCKET_PATH
}

/// Paths end up in postgresql.conf and in a URL, so only plain UTF-8 is accepted.
fn plain_str(path: &Path) -> Result<&str, EmbeddedError> {
    path.to_str()
        .filter(|s| !s.chars().any(char::is_control))
        .ok_or_else(|| EmbeddedError::UnsupportedPath(path.to_path_buf()))
}

fn render_settings(socket_dir: &str) -> String {
    // unix_socket_directories is a comma-separated list; double quotes keep commas and
    // spaces in the path literal.
    let socket_list = format!("\"{}\"", socket_dir.replace('"', "\"\""));
    format!(
        "# Managed by chatledger and rewritten on every start: edits here are lost.\n\
         listen_addresses = ''\n\
         port = {PORT}\n\
         unix_socket_directories = {}\n\
         unix_socket_permissions = 0700\n\
         max_connections = 100\n",
        conf_literal(&socket_list)
    )
}

/// Quotes a value as a postgresql.conf string literal.
fn conf_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn owner_url(socket_dir: &str) -> String {
    // The explicit port and sslmode keep PGPORT / PGSSLMODE in the environment from
    // redirecting the connection.
    format!(
        "postgres://{OWNER_ROLE}@localhost:{PORT}/{DATABASE}?host={}&sslmode=disable",
        query_escape(socket_dir)
    )
}

/// Percent-encodes everything but unreserved characters and `/`, which is what a URL
/// query parser decodes back to the same string (`+` would otherwise become a space).
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

async fn spawn_output(cmd: &mut Command) -> Result<Output, EmbeddedError> {
    cmd.output().await.map_err(|source| EmbeddedError::Spawn {
        command: describe(cmd),
        source,
    })
}

async fn run_checked(mut cmd: Command) -> Result<Output, EmbeddedError> {
    let output = spawn_output(&mut cmd).await?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(EmbeddedError::CommandFailed {
        command: describe(&cmd),
        status: output.status,
        output: text.trim_end().to_owned(),
    })
}

fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(could not read it: {err})"),
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> EmbeddedError {
    EmbeddedError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn short_cluster_path_keeps_the_socket_in_the_cluster_directory() {
        let dir = Path::new("/var/lib/chatledger/pg");
        assert_eq!(choose_socket_dir(dir), dir);
    }

    #[test]
    fn socket_path_limit_is_exactly_107_bytes() {
        let longest = format!("/{}", "a".repeat(MAX_SOCKET_PATH - SOCKET_FILE.len() - 2));
        assert!(socket_path_fits(Path::new(&longest)));
        assert!(!socket_path_fits(Path::new(&format!("{longest}b"))));
    }

    #[test]
    fn long_cluster_path_falls_back_to_a_stable_short_directory() {
        let dir = PathBuf::from(format!("/srv/{}/pg", "deep/".repeat(30)));
        let chosen = choose_socket_dir(&dir);
        assert_eq!(chosen, choose_socket_dir(&dir));
        let chosen = chosen.to_string_lossy().into_owned();
        assert!(chosen.starts_with("/tmp/chatledger-"), "{chosen}");
        assert_eq!(chosen.len(), "/tmp/chatledger-".len() + 12);
        assert!(socket_path_fits(Path::new(&chosen)));
        assert_ne!(
            chosen,
            choose_socket_dir(&dir.join("other")).to_string_lossy()
        );
    }

    #[test]
    fn newest_version_compares_numerically() {
        let names = ["9.6", "15", "12", "README", "16"].map(String::from);
        assert_eq!(newest_version(names).as_deref(), Some("16"));
        assert_eq!(newest_version(Vec::new()), None);
    }

    #[test]
    fn settings_quote_awkward_socket_paths() {
        let settings = render_settings("/data/it's a \"dir\", \\x");
        assert!(
            settings.contains(r#"unix_socket_directories = '"/data/it''s a ""dir"", \\x"'"#),
            "{settings}"
        );
        assert!(settings.contains("listen_addresses = ''"));
        assert!(settings.contains("unix_socket_permissions = 0700"));
    }

    #[test]
    fn url_names_the_owner_and_round_trips_awkward_socket_paths() {
        for dir in ["/var/lib/chatledger/pg", "/tmp/a b+c&d=e#f%g?h/ü"] {
            let url = owner_url(dir);
            let options = PgConnectOptions::from_str(&url).expect("sqlx parses the URL");
            assert_eq!(
                options.get_socket().map(PathBuf::as_path),
                Some(Path::new(dir))
            );
            assert_eq!(options.get_username(), OWNER_ROLE);
            assert_eq!(options.get_database(), Some(DATABASE));
            assert_eq!(options.get_port(), PORT);
        }
    }

    #[test]
    fn control_characters_in_paths_are_rejected() {
        assert!(plain_str(Path::new("/data/ok dir")).is_ok());
        assert!(matches!(
            plain_str(Path::new("/data/bad\ndir")),
            Err(EmbeddedError::UnsupportedPath(_))
        ));
    }
}
