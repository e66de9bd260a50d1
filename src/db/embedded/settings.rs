//! What chatledger writes into the cluster: initdb's arguments, its own settings file, the
//! owner's URL, and the roles and database it bootstraps as the superuser.

use sqlx::postgres::PgConnection;

use super::account::Account;
use super::{DATABASE, EmbeddedError, OWNER_ROLE, PORT, SUPERUSER, files};
use crate::db::RUNTIME_ROLE;
use std::path::Path;

/// Settings file that chatledger owns inside the cluster, included from postgresql.conf.
const SETTINGS_FILE: &str = "chatledger.conf";
const INCLUDE_LINE: &str = "include 'chatledger.conf'";

pub(super) const INITDB_ARGS: [&str; 6] = [
    "-U",
    SUPERUSER,
    "--auth-local=trust",
    "--auth-host=reject",
    "--encoding=UTF8",
    "--locale=C",
];

/// Writes chatledger.conf (on every start: the socket directory follows the data directory)
/// and makes postgresql.conf include it.
pub(super) fn write(
    pg_dir: &Path,
    socket_dir: &str,
    account: &Account,
) -> Result<(), EmbeddedError> {
    files::replace_file(
        &pg_dir.join(SETTINGS_FILE),
        &render_settings(socket_dir),
        account,
    )?;
    let conf = pg_dir.join("postgresql.conf");
    if !files::read_to_string(&conf)?
        .lines()
        .any(|line| line.trim() == INCLUDE_LINE)
    {
        files::append_line(
            &conf,
            &format!("\n# Settings managed by chatledger.\n{INCLUDE_LINE}"),
        )?;
    }
    Ok(())
}

/// chatledger.conf: where the cluster listens, and a log that rotates through seven daily
/// files, each truncated when its weekday comes round again.
pub(super) fn render_settings(socket_dir: &str) -> String {
    // unix_socket_directories is a comma-separated list; double quotes keep commas and
    // spaces in the path literal.
    let socket_list = format!("\"{}\"", socket_dir.replace('"', "\"\""));
    format!(
        "# Managed by chatledger and rewritten on every start: edits here are lost.\n\
         listen_addresses = ''\n\
         port = {PORT}\n\
         unix_socket_directories = {}\n\
         unix_socket_permissions = 0700\n\
         max_connections = 100\n\
         logging_collector = on\n\
         log_directory = 'log'\n\
         log_filename = 'postgresql-%a.log'\n\
         log_rotation_age = '1d'\n\
         log_rotation_size = 0\n\
         log_truncate_on_rotation = on\n",
        conf_literal(&socket_list)
    )
}

/// Quotes a value as a postgresql.conf string literal.
fn conf_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The owner role's URL over the unix socket in `socket_dir`.
pub(super) fn owner_url(socket_dir: &str) -> String {
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

/// Creates (or brings back in line) the owner role, the runtime role and the database, as the
/// superuser. The runtime role is made here, so the owner needs no CREATEROLE, and has none.
pub(super) async fn ensure_owner_and_database(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // Re-applied on every start so roles altered by hand are brought back in line.
    let ensure_role = format!(
        "DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
                ALTER ROLE {OWNER_ROLE} LOGIN NOCREATEROLE NOSUPERUSER NOBYPASSRLS;
            ELSE
                CREATE ROLE {OWNER_ROLE} LOGIN NOCREATEROLE NOSUPERUSER NOBYPASSRLS;
            END IF;
            IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{RUNTIME_ROLE}') THEN
                ALTER ROLE {RUNTIME_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
            ELSE
                CREATE ROLE {RUNTIME_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
            END IF;
            IF NOT pg_catalog.pg_has_role('{OWNER_ROLE}', '{RUNTIME_ROLE}', 'MEMBER') THEN
                GRANT {RUNTIME_ROLE} TO {OWNER_ROLE};
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
            // A character classification that knows non-ASCII letters, which audit search
            // (pg_trgm, lower()) needs; the C locale otherwise, where the OS lacks C.UTF-8.
            for create in [
                format!(
                    "CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE} TEMPLATE template0 \
                     ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C.UTF-8'"
                ),
                format!("CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}"),
            ] {
                match sqlx::raw_sql(&create).execute(&mut *conn).await {
                    Ok(_) => break,
                    // Another process created it between our check and now.
                    Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P04") => {
                        break;
                    }
                    // No such locale here.
                    Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("22023") => {}
                    Err(err) => return Err(err),
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::str::FromStr;

    use sqlx::postgres::PgConnectOptions;

    #[test]
    fn settings_quote_awkward_socket_paths() {
        let settings = render_settings("/data/it's a \"dir\", \\x");
        assert!(
            settings.contains(r#"unix_socket_directories = '"/data/it''s a ""dir"", \\x"'"#),
            "{settings}"
        );
        assert!(settings.contains("listen_addresses = ''"));
        assert!(settings.contains("unix_socket_permissions = 0700"));
        // The log rotates through seven daily files rather than growing for ever.
        assert!(settings.contains("logging_collector = on"));
        assert!(settings.contains("log_filename = 'postgresql-%a.log'"));
        assert!(settings.contains("log_truncate_on_rotation = on"));
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
}
