//! Every connection pgbridge opens for its commands and its apply path, and the advice given
//! when one fails: one place decides the application name, the TLS settings and how a refused
//! connection is explained, so every command says the same thing about the same failure.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::config::{Config, Endpoint};
use crate::error::{Error, Result};

/// Connects to blue with the session settings the apply path relies on.
pub async fn connect_blue(endpoint: &Endpoint) -> Result<Arc<Client>> {
    connect_primary(endpoint).await.map(Arc::new)
}

/// Connects to the primary among the endpoint's hosts, tried in order (as libpq's
/// `target_session_attrs=primary`): after a failover the DSN listing every host finds the new
/// primary by itself. A standby is skipped; when no host is a primary the error names what
/// each host said, and is transient unless one of them gave a definite answer (a password, a
/// missing database), since a promotion may be under way.
pub async fn connect_primary(endpoint: &Endpoint) -> Result<Client> {
    first_primary(endpoint, |host, one_of_several| async move {
        connect_host(&host, one_of_several).await
    })
    .await
}

/// Tries `endpoint`'s hosts in order with `connect` (given one host, and whether it is one of
/// several) and returns the first connection it makes; with several hosts and none taken, the
/// error says what each host said ([`no_primary`]). Every connection, SQL or replication,
/// finds the primary this way.
pub async fn first_primary<T, F, Fut>(endpoint: &Endpoint, connect: F) -> Result<T>
where
    F: Fn(Endpoint, bool) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let count = endpoint.host_count();
    if count == 1 {
        return connect(endpoint.clone(), false).await;
    }
    let mut failures = Vec::with_capacity(count);
    for i in 0..count {
        match connect(endpoint.single_host(i), true).await {
            Ok(conn) => return Ok(conn),
            Err(e) => failures.push(e),
        }
    }
    Err(no_primary(endpoint, failures))
}

/// One connection to the one host of `endpoint`, refused when that server is a standby.
async fn connect_host(endpoint: &Endpoint, one_of_several: bool) -> Result<Client> {
    match connect_any(endpoint).await? {
        (_, true) => Err(standby_refused(endpoint, one_of_several)),
        (client, false) => Ok(client),
    }
}

/// A connection to the one host of `endpoint` whatever it is, and whether it is a standby:
/// for looking at green's standbys. The whole exchange (TCP, TLS, authentication, the
/// question) gets the DSN's `connect_timeout`, as in libpq: tokio-postgres bounds only the
/// TCP connect, and a host that accepts but never answers (a stuck proxy, a frozen machine)
/// must not hold pgbridge, or the next host, for ever.
pub async fn connect_any(endpoint: &Endpoint) -> Result<(Client, bool)> {
    let limit = endpoint
        .pg
        .get_connect_timeout()
        .copied()
        .unwrap_or(std::time::Duration::from_secs(10));
    match tokio::time::timeout(limit, connect_any_unbounded(endpoint)).await {
        Ok(result) => result,
        Err(_) => Err(Error::transient(format!(
            "cannot connect to {}: no answer within {limit:?} (connect_timeout); check that the server, not a \
             stuck proxy, listens there",
            endpoint.describe()
        ))),
    }
}

async fn connect_any_unbounded(endpoint: &Endpoint) -> Result<(Client, bool)> {
    let mut pg = endpoint.pg.clone();
    if pg.get_application_name().is_none() {
        pg.application_name("pgbridge");
    }
    let tls = crate::tls::MakeTls::new(&endpoint.tls);
    let (client, connection) = pg.connect(tls).await.map_err(|e| connect_error(endpoint, &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended");
        }
    });
    // The simple protocol: no prepared statement, so the answer comes back even through a
    // pooler in statement mode, whose refusal (with its own message) comes later.
    let rows = client
        .simple_query("SELECT pg_is_in_recovery()")
        .await
        .map_err(|e| Error::postgres(format!("asking {} whether it is a standby", endpoint.describe()), &e))?;
    let in_recovery = rows.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0) == Some("t"),
        _ => false,
    });
    Ok((client, in_recovery))
}

/// A server that is a standby where pgbridge needs the primary; transient, since it may be
/// about to be promoted.
pub fn standby_refused(endpoint: &Endpoint, one_of_several: bool) -> Error {
    let e = Error::transient(format!(
        "{} is a standby (in recovery); pgbridge needs {}'s primary",
        endpoint.describe(),
        endpoint.side
    ));
    if one_of_several {
        // The DSN already lists the other hosts: a promotion is what is awaited.
        return e;
    }
    e.hint(format!(
        "list every host in {}.dsn (host=a,b) so that pgbridge finds the primary, or point it at the primary",
        endpoint.side
    ))
}

/// No host of a multi-host DSN is a primary that accepts pgbridge: what each said.
pub fn no_primary(endpoint: &Endpoint, failures: Vec<Error>) -> Error {
    let definite = failures.iter().any(|e| !e.is_transient());
    let each: Vec<String> = failures.iter().map(|e| e.message().to_string()).collect();
    let message = format!(
        "no primary among {}'s hosts {}: {}",
        endpoint.side,
        endpoint.address(),
        each.join(" | ")
    );
    if definite {
        Error::definite(message)
    } else {
        Error::transient(message)
    }
}

/// A failed connection attempt, with advice that fits the failure.
pub fn connect_error(endpoint: &Endpoint, err: &tokio_postgres::Error) -> Error {
    let e = Error::postgres(format!("cannot connect to {}", endpoint.describe()), err);
    match err.as_db_error().map(|d| d.code().code()) {
        Some("28P01") => e.hint(format!("check the password in {}.dsn", endpoint.side)),
        Some("28000") => e.hint("add a pg_hba.conf line that admits this user and database"),
        Some("3D000") => e.hint(format!("check the database name in {}.dsn", endpoint.side)),
        Some(_) => e,
        None if e.message().contains("TLS handshake failed") => e,
        None if e.message().contains("server does not support TLS") => e.hint(endpoint.tls.refused_hint(endpoint.side)),
        None => e.hint(format!(
            "check host and port in {}.dsn and that the server is running",
            endpoint.side
        )),
    }
}

/// A plain (non-replication) SQL connection to green's primary, for catalog work.
pub async fn connect_green_sql(config: &Config) -> Result<Client> {
    connect_primary(&config.green).await
}

/// A command's connections to green (SQL) and blue, in that order. A command cannot do its job
/// without both, so a failure to connect is definite: it exits 2 with the advice.
pub async fn both(config: &Config) -> Result<(Client, Arc<Client>)> {
    let green = connect_green_sql(config).await.map_err(Error::into_definite)?;
    let blue = connect_blue(&config.blue).await.map_err(Error::into_definite)?;
    Ok((green, blue))
}

/// Maps a tokio-postgres error on green to a definite error with context.
pub(crate) fn green_err(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::postgres(format!("{what} on green"), &e).into_definite()
}

/// Maps a tokio-postgres error on blue to a definite error with context.
pub(crate) fn blue_err(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::postgres(format!("{what} on blue"), &e).into_definite()
}
