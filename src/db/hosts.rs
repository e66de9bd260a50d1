//! libpq's multi-host connection URLs, split into one URL per host.
//!
//! libpq accepts `postgres://user@h1:5432,h2:5433/db` and, for unix sockets,
//! `postgres://user@/db?host=/s1,/s2&port=5432,5433`; sqlx's `PgConnectOptions` takes one host.
//! Each host's URL is the original with only the host and port changed, so that everything else
//! (user, password, database, sslmode, options) is parsed by sqlx exactly as for a single host.
//! tokio-postgres parses the multi-host form too, but into its own `Config`, which would then
//! have to be translated field by field into sqlx's options; splitting the string keeps sqlx
//! the only parser of everything but the host list.

/// Why a multi-host URL was refused; never repeats the URL, which may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostsError {
    #[error("the URL names {hosts} hosts but {ports} ports (give one port, or one per host)")]
    PortCount { hosts: usize, ports: usize },
    #[error("the URL names hosts both before the path and in ?host=; name them in one place")]
    HostsTwice,
    #[error("the URL has an empty host in its host list")]
    EmptyHost,
}

/// The URL of each host `url` names, in order; a URL with one host comes back unchanged.
pub fn split(url: &str) -> Result<Vec<String>, HostsError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(vec![url.to_owned()]);
    };
    if !matches!(scheme, "postgres" | "postgresql") {
        return Ok(vec![url.to_owned()]);
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hostlist) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let pairs: Vec<(String, String)> = query
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let query_list = |name: &str| -> Option<Vec<String>> {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.split(',').map(str::to_owned).collect())
    };
    let authority_hosts: Vec<&str> = hostlist.split(',').collect();

    // One ?host= after an empty authority still needs the authority filled in, below.
    if let Some(hosts) = query_list("host").filter(|hosts| hosts.len() > 1 || hostlist.is_empty()) {
        if authority_hosts.len() > 1 {
            return Err(HostsError::HostsTwice);
        }
        if hosts.iter().any(String::is_empty) {
            return Err(HostsError::EmptyHost);
        }
        let ports = spread(query_list("port"), hosts.len())?;
        // libpq allows `postgres://user@/db?host=...`; the URL parser under sqlx wants a host
        // before the path, which ?host= then overrides.
        let authority = match (hostlist.is_empty(), userinfo) {
            (false, _) => authority.to_owned(),
            (true, Some(info)) => format!("{info}@localhost"),
            (true, None) => "localhost".to_owned(),
        };
        let urls = hosts
            .iter()
            .zip(ports)
            .map(|(host, port)| {
                let mut query = form_urlencoded::Serializer::new(String::new());
                for (key, value) in &pairs {
                    match key.as_str() {
                        "host" => query.append_pair("host", host),
                        "port" => match &port {
                            Some(port) => query.append_pair("port", port),
                            None => &mut query,
                        },
                        _ => query.append_pair(key, value),
                    };
                }
                format!("{scheme}://{authority}{path}?{}", query.finish())
            })
            .collect();
        return Ok(urls);
    }

    if authority_hosts.len() < 2 {
        return Ok(vec![url.to_owned()]);
    }
    if authority_hosts.iter().any(|host| host.is_empty()) {
        return Err(HostsError::EmptyHost);
    }
    let at = userinfo.map(|info| format!("{info}@")).unwrap_or_default();
    let query = query.map(|query| format!("?{query}")).unwrap_or_default();
    // libpq: a port given on the last host only applies to that host; each host carries its own.
    Ok(authority_hosts
        .iter()
        .map(|host| format!("{scheme}://{at}{host}{path}{query}"))
        .collect())
}

/// The port of each of `hosts` hosts: one port applies to all, else one per host.
fn spread(ports: Option<Vec<String>>, hosts: usize) -> Result<Vec<Option<String>>, HostsError> {
    match ports {
        None => Ok(vec![None; hosts]),
        Some(ports) if ports.len() == 1 => Ok(vec![Some(ports[0].clone()); hosts]),
        Some(ports) if ports.len() == hosts => Ok(ports
            .into_iter()
            .map(|port| Some(port).filter(|port| !port.is_empty()))
            .collect()),
        Some(ports) => Err(HostsError::PortCount {
            hosts,
            ports: ports.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::postgres::PgConnectOptions;

    use super::*;

    fn options(url: &str) -> Vec<PgConnectOptions> {
        split(url)
            .expect("splits")
            .iter()
            .map(|url| PgConnectOptions::from_str(url).expect("each host's URL parses"))
            .collect()
    }

    #[test]
    fn a_single_host_url_comes_back_unchanged() {
        for url in [
            "postgres://owner:secret@db.example:6432/chatledger?sslmode=require",
            "postgres://chatledger_owner@localhost/dev?host=/tmp/devpg/sock",
            "postgresql://owner@[::1]:5432/db",
            "postgres:///db",
            "not a url",
        ] {
            assert_eq!(split(url), Ok(vec![url.to_owned()]), "{url}");
        }
    }

    #[test]
    fn hosts_before_the_path_each_keep_their_port_and_share_the_rest() {
        let hosts =
            options("postgres://owner:p%40ss@host1:5432,host2:5433,[::1]/ledger?sslmode=disable");
        let seen: Vec<(String, u16)> = hosts
            .iter()
            .map(|host| (host.get_host().to_owned(), host.get_port()))
            .collect();
        assert_eq!(
            seen,
            [
                ("host1".to_owned(), 5432),
                ("host2".to_owned(), 5433),
                ("[::1]".to_owned(), 5432)
            ]
        );
        for host in &hosts {
            assert_eq!(host.get_username(), "owner");
            assert_eq!(host.get_database(), Some("ledger"));
        }
    }

    #[test]
    fn one_socket_in_the_query_after_an_empty_authority_is_libpqs_form_too() {
        for url in [
            "postgres://owner@/chatledger?host=/run/pg",
            "postgres:///chatledger?host=/run/pg&user=owner",
        ] {
            let hosts = options(url);
            assert_eq!(hosts.len(), 1, "{url}");
            assert_eq!(
                hosts[0]
                    .get_socket()
                    .map(|socket| socket.display().to_string()),
                Some("/run/pg".to_owned()),
                "{url}"
            );
            assert_eq!(hosts[0].get_username(), "owner", "{url}");
            assert_eq!(hosts[0].get_database(), Some("chatledger"), "{url}");
        }
    }

    #[test]
    fn sockets_in_the_query_pair_with_their_ports() {
        let hosts = options(
            "postgres://owner@/chatledger?application_name=x&host=/run/a,%2Frun%2Fb&port=5432,5433",
        );
        let seen: Vec<(Option<String>, u16)> = hosts
            .iter()
            .map(|host| {
                (
                    host.get_socket().map(|socket| socket.display().to_string()),
                    host.get_port(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (Some("/run/a".to_owned()), 5432),
                (Some("/run/b".to_owned()), 5433)
            ]
        );
        for host in &hosts {
            assert_eq!(host.get_database(), Some("chatledger"));
            assert_eq!(host.get_application_name(), Some("x"));
        }
    }

    #[test]
    fn one_port_in_the_query_applies_to_every_host() {
        let hosts = options("postgres://owner@localhost/db?host=/s1,/s2&port=6000");
        assert!(hosts.iter().all(|host| host.get_port() == 6000));
        let hosts = options("postgres://owner@localhost/db?host=/s1,/s2");
        assert_eq!(hosts.len(), 2);
        assert!(hosts.iter().all(|host| host.get_port() == 5432));
    }

    #[test]
    fn inconsistent_lists_are_refused_without_echoing_the_url() {
        let refused = split("postgres://owner:hunter2@x/db?host=/s1,/s2,/s3&port=1,2");
        assert_eq!(refused, Err(HostsError::PortCount { hosts: 3, ports: 2 }));
        let message = refused
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(!message.contains("hunter2"), "{message}");
        assert_eq!(
            split("postgres://owner@h1,h2/db?host=/s1,/s2"),
            Err(HostsError::HostsTwice)
        );
        assert_eq!(
            split("postgres://owner@h1,,h2/db"),
            Err(HostsError::EmptyHost)
        );
        assert_eq!(
            split("postgres://owner@/db?host=/s1,"),
            Err(HostsError::EmptyHost)
        );
    }
}
