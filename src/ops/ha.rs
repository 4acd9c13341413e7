//! High availability of green, as `check` and `status` report it: whether the bridge's slot
//! would survive a promotion of each standby green.dsn lists, and what to configure where it
//! would not. PostgreSQL 17+ carries a failover slot to standbys that synchronize slots
//! (`sync_replication_slots`, `hot_standby_feedback`, `primary_slot_name`, a `dbname` in
//! `primary_conninfo`), and the primary's `synchronized_standby_slots` keeps the bridge from
//! receiving a change those standbys lack. Before 17 a slot exists only on the primary.

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{Config, Endpoint};
use crate::connect::green_err;
use crate::error::Result;

/// One thing found: fine (`ok`), or something to configure.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub ok: bool,
    pub text: String,
}

impl Finding {
    fn ok(text: String) -> Self {
        Finding { ok: true, text }
    }
    fn fix(text: String) -> Self {
        Finding { ok: false, text }
    }
}

/// What green's primary says about failover.
struct Primary {
    version: i32,
    /// `synchronized_standby_slots` (17+), as listed.
    synchronized: Vec<String>,
    /// Physical slots: (name, active).
    physical: Vec<(String, bool)>,
    /// The bridge slot's failover flag; `None` without the slot or before 17.
    failover: Option<bool>,
}

/// Reviews green's failover readiness over a connection of its own to green's primary.
pub async fn review(config: &Config) -> Result<Vec<Finding>> {
    let green = crate::connect::connect_green_sql(config)
        .await
        .map_err(crate::error::Error::into_definite)?;
    review_green(config, &green).await
}

/// Reviews green's primary (`green`) and each other host green.dsn lists.
pub async fn review_green(config: &Config, green: &Client) -> Result<Vec<Finding>> {
    let primary = read_primary(config, green).await?;
    let mut found = Vec::new();
    let standbys = standby_hosts(&config.green).await;
    if primary.version < 170000 {
        if !standbys.is_empty() || !primary.physical.is_empty() {
            found.push(Finding::fix(format!(
                "green runs PostgreSQL {}: a replication slot exists only on the primary, so a failover of green ends \
                 the bridge (pgbridge stops and says so; recovery: `pgbridge setup --copy`). PostgreSQL 17+ carries the \
                 slot over (failover slots)",
                primary.version / 10000
            )));
        }
        return Ok(found);
    }
    found.push(match primary.failover {
        Some(true) => Finding::ok(format!("slot {} is a failover slot", config.slot)),
        Some(false) => Finding::fix(format!(
            "slot {} is not a failover slot: stop `pgbridge run` and run `pgbridge setup`, which makes it one",
            config.slot
        )),
        None => Finding::ok(format!(
            "`pgbridge setup` creates slot {} as a failover slot",
            config.slot
        )),
    });
    if config.green.host_count() == 1 {
        found.extend(single_host(&primary));
    }
    for (label, standby) in standbys {
        match standby {
            Ok(client) => found.extend(review_standby(config, &label, &client, &primary).await),
            Err(e) => found.push(Finding::fix(format!("cannot review green standby {label}: {e}"))),
        }
    }
    Ok(found)
}

async fn read_primary(config: &Config, green: &Client) -> Result<Primary> {
    let row = green
        .query_one(
            "SELECT current_setting('server_version_num')::int, \
                    coalesce(current_setting('synchronized_standby_slots', true), '')",
            &[],
        )
        .await
        .map_err(green_err("reading failover settings"))?;
    let physical = green
        .query(
            "SELECT slot_name::text, active FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY 1",
            &[],
        )
        .await
        .map_err(green_err("reading physical replication slots"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let synchronized: String = row.get(1);
    Ok(Primary {
        version: row.get(0),
        synchronized: synchronized
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        physical,
        // The slot as `setup` reads it: one place knows where the failover flag is.
        failover: super::slot::slot_state(green, &config.slot)
            .await?
            .and_then(|s| s.failover),
    })
}

/// With one host in green.dsn, standbys known from the primary's physical slots.
fn single_host(primary: &Primary) -> Option<Finding> {
    let active: Vec<&str> = primary
        .physical
        .iter()
        .filter(|(_, a)| *a)
        .map(|(n, _)| n.as_str())
        .collect();
    if active.is_empty() {
        return None;
    }
    Some(Finding::fix(format!(
        "green has standbys streaming from physical slot(s) {}, but green.dsn names one host: list every host \
         (postgres://user@primary:5432,standby:5432/db or host=primary,standby) so that after a promotion pgbridge \
         finds the new primary by itself",
        active.join(", ")
    )))
}

/// The other hosts of green.dsn that are standbys, each with a connection or why there is none.
async fn standby_hosts(endpoint: &Endpoint) -> Vec<(String, Result<Client>)> {
    let mut standbys = Vec::new();
    if endpoint.host_count() == 1 {
        return standbys;
    }
    for i in 0..endpoint.host_count() {
        let label = endpoint.host_label(i);
        match crate::connect::connect_any(&endpoint.single_host(i)).await {
            Ok((client, true)) => standbys.push((label, Ok(client))),
            Ok((_, false)) => {}
            Err(e) => standbys.push((label, Err(e))),
        }
    }
    standbys
}

/// Whether the standby `label` would carry the bridge's slot over when promoted.
async fn review_standby(config: &Config, label: &str, standby: &Client, primary: &Primary) -> Vec<Finding> {
    let row = match standby
        .query_one(
            "SELECT current_setting('sync_replication_slots', true), current_setting('hot_standby_feedback'), \
                    current_setting('primary_slot_name'), current_setting('wal_level'), \
                    (SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'), \
                    (SELECT CASE WHEN synced AND NOT temporary THEN 'synchronized' WHEN synced THEN 'being synchronized' \
                                 ELSE 'a slot of the standby''s own' END \
                     FROM pg_replication_slots WHERE slot_name = $1)",
            &[&config.slot],
        )
        .await
    {
        Ok(row) => row,
        Err(e) => return vec![Finding::fix(format!("cannot review green standby {label}: {e}"))],
    };
    let setting = |i: usize| row.get::<_, Option<String>>(i).unwrap_or_default();
    let mut found = Vec::new();
    let mut set = Vec::new();
    if setting(0) != "on" {
        set.push("sync_replication_slots = on".to_string());
    }
    if setting(1) != "on" {
        set.push("hot_standby_feedback = on".to_string());
    }
    if setting(3) != "logical" {
        set.push("wal_level = logical (restart)".to_string());
    }
    let slot_name = setting(2);
    if slot_name.is_empty() {
        set.push("primary_slot_name = '<a physical slot on the primary>' (create it there with SELECT pg_create_physical_replication_slot('name'))".to_string());
    }
    match row.get::<_, Option<String>>(4) {
        Some(conninfo) if !conninfo.contains("dbname") => {
            set.push("a dbname in primary_conninfo (e.g. dbname=postgres)".to_string())
        }
        Some(_) => {}
        None => found.push(Finding::fix(format!(
            "green standby {label}: cannot read primary_conninfo to check it names a dbname (slot synchronization needs \
             one); grant pg_read_all_settings to see it"
        ))),
    }
    let configured = set.is_empty();
    if !configured {
        found.push(Finding::fix(format!("green standby {label}: set {}", set.join(", "))));
    }
    if !slot_name.is_empty() && !primary.synchronized.contains(&slot_name) {
        let mut list = primary.synchronized.clone();
        list.push(slot_name.clone());
        found.push(Finding::fix(format!(
            "green primary: set synchronized_standby_slots = '{}' (then reload), so that pgbridge never receives a \
             change standby {label} does not have; without it a promotion can leave blue with transactions green lost",
            list.join(",")
        )));
    }
    found.push(match row.get::<_, Option<String>>(5) {
        Some(state) if state == "synchronized" => Finding::ok(format!(
            "green standby {label} has slot {} synchronized: promoting it carries the bridge over",
            config.slot
        )),
        Some(state) => Finding::fix(format!("green standby {label}: slot {} is {state}", config.slot)),
        None => Finding::fix(format!(
            "green standby {label} does not have slot {} (yet): it is synchronized once {}the standby has caught up \
             with the slot (the synchronization worker checks every few seconds to 30 s)",
            config.slot,
            if configured { "" } else { "the settings above hold and " }
        )),
    });
    found
}
