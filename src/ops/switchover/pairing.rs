//! Whether a configuration is the bridge in the other direction: it reads this bridge's target
//! and writes its source, with a slot of its own. Both configurations are written by people,
//! who name one server `localhost` in one file and `127.0.0.1`, a DNS name, a proxy or a
//! multi-host list in the other, so endpoints are compared by the server and database they
//! reach ([`Identity`]), and by their text only when the texts are the same.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::config::{Config, Endpoint};
use crate::error::{Error, Result};

/// Which server and database a connection reached.
///
/// Why this is enough to tell two endpoints apart, and to tell that they are the same:
/// - `database`: one server holds many databases, and a bridge reads or writes one of them.
/// - `started` (`pg_postmaster_start_time()`, to the microsecond, readable by every role):
///   two running servers share it only if their postmasters started in the same microsecond.
///   It is what tells apart the copies of one cluster (a promoted standby, a restored base
///   backup or disk snapshot: green is often made that way from blue), which share a system
///   identifier. It changes when the server restarts: a restart between pairing's
///   connections, a second apart, refuses a good pair, which is the safe way to be wrong, and
///   running the command again pairs them.
/// - `system_identifier` (`pg_control_system()`, chosen at `initdb`): tells apart two
///   clusters started in the same microsecond. PostgreSQL grants it to PUBLIC, but a managed
///   service may revoke it; then it is left out, and compared only when both sides read it.
/// - `port` (`inet_server_port()`): the port the server listens on, whatever address, proxy
///   or port mapping the client went through; NULL over a Unix socket, so compared only when
///   both connections have it.
///
/// A physical standby is never reached: pgbridge connects to the primary among a DSN's hosts
/// ([`crate::connect::connect_primary`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Identity {
    pub system_identifier: Option<i64>,
    pub started: SystemTime,
    pub port: Option<i32>,
    pub database: String,
}

impl Identity {
    /// The same PostgreSQL server (cluster): replication slots are named per server.
    pub fn same_server(&self, other: &Identity) -> bool {
        fn differ<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
            matches!((a, b), (Some(a), Some(b)) if a != b)
        }
        self.started == other.started
            && !differ(self.system_identifier, other.system_identifier)
            && !differ(self.port, other.port)
    }

    /// The same database of the same server.
    pub fn same_database(&self, other: &Identity) -> bool {
        self.same_server(other) && self.database == other.database
    }

    /// `database app on the server started 2024-05-01T10:00:00.123456Z (system 7365…, port 5432)`.
    fn describe(&self) -> String {
        let mut about = Vec::new();
        if let Some(id) = self.system_identifier {
            about.push(format!("system {id}"));
        }
        if let Some(port) = self.port {
            about.push(format!("port {port}"));
        }
        let about = if about.is_empty() {
            String::new()
        } else {
            format!(" ({})", about.join(", "))
        };
        format!(
            "database {} on the server started {}{about}",
            self.database,
            humantime::format_rfc3339_micros(self.started)
        )
    }
}

/// Reads which server and database `endpoint` reaches (its primary, for a multi-host DSN).
async fn identify(endpoint: &Endpoint) -> Result<Identity> {
    let client = crate::connect::connect_primary(endpoint).await?;
    let err = |e| Error::postgres(format!("reading which server {} is", endpoint.describe()), &e);
    // Asked first, so that a role without the privilege leaves no error in the server's log.
    let row = client
        .query_one(
            "SELECT has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE'), \
                    pg_catalog.pg_postmaster_start_time(), pg_catalog.inet_server_port(), \
                    pg_catalog.current_database()::text",
            &[],
        )
        .await
        .map_err(err)?;
    let system_identifier = if row.get(0) {
        let id = client
            .query_one("SELECT system_identifier FROM pg_catalog.pg_control_system()", &[])
            .await
            .map_err(err)?;
        Some(id.get(0))
    } else {
        None
    };
    Ok(Identity {
        system_identifier,
        started: row.get(1),
        port: row.get(2),
        database: row.get(3),
    })
}

/// One endpoint of one configuration, for messages: `to_green.toml [green] (app@db1:5432/app)`.
struct Named<'a> {
    config: &'a Config,
    section: &'static str,
    endpoint: &'a Endpoint,
}

impl Named<'_> {
    fn green(config: &Config) -> Named<'_> {
        Named {
            config,
            section: "green",
            endpoint: &config.green,
        }
    }

    fn blue(config: &Config) -> Named<'_> {
        Named {
            config,
            section: "blue",
            endpoint: &config.blue,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} [{}] ({}@{})",
            self.config.path.display(),
            self.section,
            self.endpoint.user(),
            self.endpoint.address()
        )
    }
}

/// The identities read so far, by DSN address: each server is asked once.
#[derive(Default)]
struct Identities(HashMap<String, Identity>);

impl Identities {
    async fn of(&mut self, named: &Named<'_>, other: &Named<'_>) -> Result<Identity> {
        let key = named.endpoint.address();
        if let Some(known) = self.0.get(&key) {
            return Ok(known.clone());
        }
        let identity = identify(named.endpoint).await.map_err(|e| {
            e.into_definite().context(format!(
                "cannot tell whether {} and {} are the same database",
                named.describe(),
                other.describe()
            ))
        })?;
        self.0.insert(key, identity.clone());
        Ok(identity)
    }

    /// Whether both reach the same database; `Err(why)` when they do not, saying what each
    /// reached. The same DSN address is the same database without asking.
    async fn same_database(&mut self, a: &Named<'_>, b: &Named<'_>) -> Result<Result<(), String>> {
        if a.endpoint.address() == b.endpoint.address() {
            return Ok(Ok(()));
        }
        let (x, y) = (self.of(a, b).await?, self.of(b, a).await?);
        if x.same_database(&y) {
            return Ok(Ok(()));
        }
        Ok(Err(format!(
            "{} reaches {}, {} reaches {}",
            a.describe(),
            x.describe(),
            b.describe(),
            y.describe()
        )))
    }

    /// Whether both reach the same server, whatever the database; the same hosts in the DSNs
    /// are the same server without asking.
    async fn same_server(&mut self, a: &Named<'_>, b: &Named<'_>) -> Result<bool> {
        if hosts(a.endpoint) == hosts(b.endpoint) {
            return Ok(true);
        }
        Ok(self.of(a, b).await?.same_server(&self.of(b, a).await?))
    }
}

/// The hosts and ports a DSN lists, in order.
fn hosts(endpoint: &Endpoint) -> Vec<String> {
    (0..endpoint.host_count()).map(|i| endpoint.host_label(i)).collect()
}

/// What keeps `reverse` from being the bridge in the other direction: it must read this
/// bridge's target and write its source (the same databases, however the DSNs name them), and
/// its slot must not be this bridge's (the same name on the same server). `Ok(None)` when it
/// pairs; `Err` when a server needed to tell cannot be reached.
pub(crate) async fn pairing_problem(config: &Config, reverse: &Config) -> Result<Option<String>> {
    let mut known = Identities::default();
    let mut wrong = Vec::new();
    for (theirs, ours) in [
        (Named::green(reverse), Named::blue(config)),
        (Named::blue(reverse), Named::green(config)),
    ] {
        if let Err(why) = known.same_database(&theirs, &ours).await? {
            wrong.push(why);
        }
    }
    if !wrong.is_empty() {
        return Ok(Some(format!(
            "{} is not the bridge in the other direction: it streams from {} to {}, but the writes move from {} \
             to {}, so it must stream from {} to {} ({})",
            reverse.path.display(),
            reverse.green.address(),
            reverse.blue.address(),
            config.green.address(),
            config.blue.address(),
            config.blue.address(),
            config.green.address(),
            wrong.join("; ")
        )));
    }
    if reverse.slot == config.slot && known.same_server(&Named::green(reverse), &Named::green(config)).await? {
        return Ok(Some(format!(
            "{} uses the same slot {} as this bridge, on the same server (slot names are per server); give it \
             another slot",
            reverse.path.display(),
            reverse.slot
        )));
    }
    Ok(None)
}

/// [`pairing_problem`] as an error, for the commands that stop on it.
pub(crate) async fn check_pairing(config: &Config, reverse: &Config) -> Result<()> {
    match pairing_problem(config, reverse).await? {
        Some(problem) => Err(Error::definite(problem)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(micros: u64) -> Identity {
        Identity {
            system_identifier: Some(7),
            started: SystemTime::UNIX_EPOCH + Duration::from_micros(micros),
            port: Some(5432),
            database: "app".into(),
        }
    }

    #[test]
    fn the_same_server_and_database_whatever_is_unknown_on_one_side() {
        let a = at(1);
        assert!(a.same_database(&a.clone()));
        let unix = Identity {
            port: None,
            system_identifier: None,
            ..a.clone()
        };
        assert!(
            a.same_database(&unix),
            "a Unix socket and a role without pg_control_system"
        );
    }

    #[test]
    fn a_copy_of_the_cluster_another_cluster_port_or_database_differ() {
        let a = at(1);
        assert!(
            !a.same_server(&at(2)),
            "a promoted standby shares the system identifier"
        );
        let other_cluster = Identity {
            system_identifier: Some(8),
            ..a.clone()
        };
        assert!(!a.same_server(&other_cluster));
        let other_port = Identity {
            port: Some(5433),
            ..a.clone()
        };
        assert!(!a.same_server(&other_port));
        let other_db = Identity {
            database: "other".into(),
            ..a.clone()
        };
        assert!(a.same_server(&other_db) && !a.same_database(&other_db));
    }
}
