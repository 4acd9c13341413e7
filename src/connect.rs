//! Every connection pgbridge opens for its commands and its apply path, and the advice given
//! when one fails: one place decides the application name, the TLS settings and how a refused
//! connection is explained, so every command says the same thing about the same failure.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::config::{Config, Endpoint};
use crate::error::{Error, Result};

/// Connects to blue with the session settings the apply path relies on.
pub async fn connect_blue(endpoint: &Endpoint) -> Result<Arc<Client>> {
    let mut pg = endpoint.pg.clone();
    if pg.get_application_name().is_none() {
        pg.application_name("pgbridge");
    }
    let tls = crate::tls::MakeTls::new(&endpoint.tls);
    let (client, connection) = pg.connect(tls).await.map_err(|e| connect_error(endpoint, &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "blue connection ended");
        }
    });
    Ok(Arc::new(client))
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

/// A plain (non-replication) SQL connection to green, for catalog work.
pub async fn connect_green_sql(config: &Config) -> Result<Client> {
    let mut pg = config.green.pg.clone();
    pg.application_name("pgbridge");
    let (client, connection) = pg
        .connect(crate::tls::MakeTls::new(&config.green.tls))
        .await
        .map_err(|e| connect_error(&config.green, &e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
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
