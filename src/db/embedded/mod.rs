//! The embedded default database: a private PostgreSQL cluster in `<data-dir>/pg`, reachable
//! only through a unix socket, run as an unprivileged account and bootstrapped with the
//! non-superuser owner role that `database_url()` names. Every chatledger process that uses it
//! holds a shared lock on `<data-dir>/pg.lock`; the last one out stops the cluster, if
//! chatledger started it (`<data-dir>/pg.started`), so a command never stops it under a server.
//!
//! `account`: who runs it; `files`: its files, never followed through a link; `settings`: what
//! chatledger writes into it; `process`: initdb, pg_ctl and waiting for it.

mod account;
mod files;
mod process;
mod settings;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use account::Account;
use files::{choose_socket_dir, ensure_owned_dir, ensure_socket_dir, plain_str, prepare_data_dir};
use process::find_bin_dir;

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
const TIMEOUT: Duration = Duration::from_secs(60);

/// Errors from initialising, starting, bootstrapping or stopping the embedded cluster.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// A command other than `serve` or `migrate` found no cluster in its data dir.
    #[error(
        "no chatledger cluster in {0} (no {0}/pg): `chatledger serve --data-dir {0}` creates one; \
         check --data-dir (CHATLEDGER_DATA_DIR), or name another database with --database-url"
    )]
    NoCluster(String),
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
    /// Marks a cluster that chatledger started, and so stops when its last user leaves.
    started_marker: PathBuf,
    /// This process's share of `pg.lock`.
    users: Flock<File>,
}

/// An error unless `data_dir` holds a cluster (initialised or not): checked before anything is
/// created there.
pub fn require_cluster(data_dir: &Path) -> Result<(), EmbeddedError> {
    match fs::symlink_metadata(data_dir.join("pg")) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            Err(EmbeddedError::NoCluster(data_dir.display().to_string()))
        }
        Err(source) => Err(io_error("inspect", &data_dir.join("pg"), source)),
    }
}

impl EmbeddedCluster {
    /// Initialise `<data_dir>/pg` on first use (or reuse it), start it if not running, wait
    /// until it accepts connections, ensure the roles and database exist. Returns a handle.
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
        // Waits while a last user is stopping the cluster; then this process is a user too.
        let users = lock_users(&data_dir.join("pg.lock"), FlockArg::LockShared)?;

        let socket_dir = choose_socket_dir(&pg_dir);
        if socket_dir != pg_dir {
            ensure_socket_dir(&socket_dir, &account)?;
        }

        let cluster = EmbeddedCluster {
            pg_dir,
            socket_dir,
            bin_dir,
            account,
            started_marker: data_dir.join("pg.started"),
            users,
        };
        if !cluster.is_initialised()? {
            cluster.initdb(&data_dir).await?;
        }
        ensure_owned_dir(&cluster.pg_dir.join("log"), &cluster.account, 0o700)?;
        settings::write(
            &cluster.pg_dir,
            &cluster.socket_dir.to_string_lossy(),
            &cluster.account,
        )?;

        // A server found running may still be starting up, or may be a dying one whose pid
        // file is not stale yet; `connect_superuser` tells the two apart.
        let mut conn = None;
        if cluster.is_running().await? {
            conn = cluster.connect_superuser().await?;
        }
        let started_here = conn.is_none();
        if started_here {
            cluster.pg_ctl_start().await?;
            File::create(&cluster.started_marker)
                .map_err(|source| io_error("create", &cluster.started_marker, source))?;
        }
        tracing::info!(
            data_dir = %cluster.pg_dir.display(),
            socket_dir = %cluster.socket_dir.display(),
            started_here,
            "embedded PostgreSQL is up"
        );

        match cluster.bootstrap(conn).await {
            Ok(()) => Ok(cluster),
            Err(err) => {
                if let Err(stop_err) = cluster.stop().await {
                    tracing::warn!(error = %stop_err, "could not stop embedded PostgreSQL");
                }
                Err(err)
            }
        }
    }

    /// Connection URL for the owner role (not a superuser), over the unix socket.
    pub fn database_url(&self) -> String {
        // Socket paths are validated as plain UTF-8 in `start`, so nothing is lost here.
        settings::owner_url(&self.socket_dir.to_string_lossy())
    }

    /// Leaves the cluster: stops it (`pg_ctl stop -m fast`, waiting for it) when no other
    /// chatledger process uses it and chatledger started it; otherwise leaves it running.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        let last = self.users.relock(FlockArg::LockExclusiveNonblock).is_ok();
        if !last || !self.started_marker.exists() {
            tracing::info!(last_user = last, "leaving embedded PostgreSQL running");
            return Ok(());
        }
        let timeout = TIMEOUT.as_secs().to_string();
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", &timeout])
            .await?;
        fs::remove_file(&self.started_marker)
            .map_err(|source| io_error("remove", &self.started_marker, source))
    }

    fn is_initialised(&self) -> Result<bool, EmbeddedError> {
        let meta = match fs::symlink_metadata(&self.pg_dir) {
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
}

/// Takes `arg` on the lock file of the cluster's users (created, mode 0600, in the data dir,
/// which only this account can write).
fn lock_users(path: &Path, arg: FlockArg) -> Result<Flock<File>, EmbeddedError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| io_error("open", path, source))?;
    Flock::lock(file, arg).map_err(|(_, errno)| io_error("lock", path, io::Error::from(errno)))
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> EmbeddedError {
    EmbeddedError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
