//! The checks a switchover makes before it changes anything (the two bridges can run at once,
//! the roles exist and may be fenced) and fencing itself: a role's `default_transaction_read_only`
//! in the database.

use super::Side;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::sql;

/// Two bridges in opposite directions run at once only if neither carries what the other
/// wrote.
pub(super) fn bridges_can_run_both_ways(config: &Config, reverse: &Config) -> Result<()> {
    for c in [config, reverse] {
        if c.origin.is_none() || !c.skip_origins {
            return Err(Error::definite(format!(
                "{}: with apply.origin = \"\" or green.origin = \"any\", the two bridges would echo each other's rows \
                 back and forth; remove those settings (the defaults tag what a bridge writes and skip what the other \
                 wrote)",
                c.path.display()
            )));
        }
    }
    if config.origin == reverse.origin {
        return Err(Error::definite(format!(
            "both bridges use replication origin {:?}; give each its own apply.origin",
            config.origin.as_deref().unwrap_or_default()
        )));
    }
    Ok(())
}

/// The roles exist, are not the role switchover connects as, and this role may fence them,
/// terminate and watch their sessions.
pub(super) async fn preflight(side: &Side, roles: &[String]) -> Result<()> {
    let me: String = side
        .client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(side.err("reading the role"))?
        .get(0);
    let mut problems = Vec::new();
    for role in roles {
        if *role == me {
            problems.push(format!(
                "{role} is the role pgbridge connects to {} as; fencing it would fence the bridge",
                side.address
            ));
            continue;
        }
        let row = side
            .client
            .query_opt(
                "SELECT pg_has_role($1, 'USAGE') OR pg_has_role('pg_signal_backend', 'USAGE'), \
                        pg_has_role($1, 'USAGE') OR pg_has_role('pg_read_all_stats', 'USAGE') \
                 FROM pg_roles WHERE rolname = $1",
                &[role],
            )
            .await
            .map_err(side.err("reading roles"))?;
        let Some(row) = row else {
            problems.push(format!("role {role} does not exist on {}", side.address));
            continue;
        };
        let (signal, stats): (bool, bool) = (row.get(0), row.get(1));
        if !signal {
            problems.push(format!(
                "role {me} may not terminate sessions of {role} on {}; run there: GRANT pg_signal_backend TO {}",
                side.address,
                sql::ident(&me)
            ));
        }
        if !stats {
            problems.push(format!(
                "role {me} cannot see whether sessions of {role} on {} have write transactions open; run there: \
                 GRANT pg_read_all_stats TO {}",
                side.address,
                sql::ident(&me)
            ));
        }
        // ALTER ROLE is transactional: try it, and roll it back.
        let tried = async {
            side.client.batch_execute("BEGIN").await?;
            let r = side.client.batch_execute(&alter_sql(&side.db, role, Some("on"))).await;
            side.client.batch_execute("ROLLBACK").await?;
            r
        }
        .await;
        if let Err(e) = tried {
            problems.push(format!(
                "role {me} may not change the settings of {role} on {} ({}); it needs superuser, or CREATEROLE with \
                 ADMIN OPTION on {role} (PostgreSQL 16+)",
                side.address,
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string())
            ));
        }
    }
    crate::ops::privileges::refuse(problems, "nothing was fenced")
}

fn alter_sql(db: &str, role: &str, value: Option<&str>) -> String {
    let action = match value {
        Some(v) => format!("SET default_transaction_read_only = {}", sql::literal(v)),
        None => "RESET default_transaction_read_only".to_string(),
    };
    format!(
        "ALTER ROLE {} IN DATABASE {} {action}",
        sql::ident(role),
        sql::ident(db)
    )
}

/// The role's database-level `default_transaction_read_only` on this side, if set.
pub(super) async fn read_only_setting(side: &Side, role: &str) -> Result<Option<String>> {
    let row = side
        .client
        .query_opt(
            "SELECT split_part(c, '=', 2) FROM pg_db_role_setting s, unnest(s.setconfig) AS c \
             WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND s.setrole = (SELECT oid FROM pg_roles WHERE rolname = $1) \
               AND c LIKE 'default\\_transaction\\_read\\_only=%'",
            &[&role],
        )
        .await
        .map_err(side.err("reading role settings"))?;
    Ok(row.map(|r| r.get(0)))
}

/// Sets (`Some`) or resets (`None`) the role's database-level `default_transaction_read_only`.
pub(super) async fn set_read_only(side: &Side, role: &str, value: Option<&str>) -> Result<()> {
    side.client
        .batch_execute(&alter_sql(&side.db, role, value))
        .await
        .map_err(side.err(&format!("changing the settings of role {role}")))
}

/// Where the reverse bridge's slot starts (its confirmed position) and whether a pgbridge is
/// streaming it.
pub(super) async fn reverse_position(entered: &Side, reverse: &Config) -> Result<(Lsn, bool)> {
    let slot = super::slot::slot_state(&entered.client, &reverse.slot)
        .await?
        .ok_or_else(|| Error::definite(format!("the reverse bridge's slot {} disappeared", reverse.slot)))?;
    if slot.lost {
        return Err(Error::definite(format!(
            "the reverse bridge's slot {} on {} was invalidated",
            reverse.slot, entered.address
        )));
    }
    Ok((slot.confirmed, slot.active))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alter_quotes_role_and_database() {
        assert_eq!(
            alter_sql("app db", "App\"x", Some("on")),
            "ALTER ROLE \"App\"\"x\" IN DATABASE \"app db\" SET default_transaction_read_only = 'on'"
        );
        assert_eq!(
            alter_sql("app", "app", None),
            "ALTER ROLE \"app\" IN DATABASE \"app\" RESET default_transaction_read_only"
        );
    }
}
