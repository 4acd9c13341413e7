//! `pgbridge switchover`: moves the application's writes from this bridge's source (its
//! `[green]` database, the side being left) to its target (`[blue]`, the side being entered),
//! and hands the stream over to the bridge for the new direction (`--reverse`, whose source
//! is this bridge's target).
//!
//! Before anything changes, both bridges are checked: this one must be streaming, both must
//! tag their commits and skip tagged transactions (so they can run at once without echo), and
//! the reverse bridge is set up if it is not (`setup`: publication, slot, checkpoint). Its slot
//! is created while the application cannot write on the side being entered, so it holds
//! every application write made there after the switch, and none from before.
//!
//! Then, with the write-unavailability window open:
//! 1. fence: `ALTER ROLE app IN DATABASE db SET default_transaction_read_only = on` on the
//!    side being left, terminate the roles' sessions there, and wait until none of them has
//!    a write transaction open;
//! 2. wait until this bridge has applied everything the side being left committed (the
//!    marker of `pgbridge wait`);
//! 3. move the entered side's sequences past the left side's (`sync-sequences`);
//! 4. read the reverse bridge's position;
//! 5. un-fence the roles on the side being entered (if an earlier switchover fenced them).
//!
//! A failure at any step undoes the steps before it, newest first: the roles on the side
//! being left get their previous setting back, moved sequences go back, a reverse bridge set
//! up by this run is torn down, so both sides are as they were.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

mod pairing;
mod roles;
mod undo;

use super::{sequences, setup, slot, wait};
use crate::config::{Config, Endpoint};
use crate::connect::connect_green_sql;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
/// Whether a configuration is the bridge in the other direction (also `check --roundtrip`).
pub(crate) use pairing::check_pairing;
use roles::{bridges_can_run_both_ways, preflight, read_only_setting, reverse_position, set_read_only};
use undo::undo;

/// How often the fence and the catch-up are polled.
const POLL: Duration = Duration::from_millis(5);

pub struct Options {
    /// Configuration of the bridge for the new direction.
    pub reverse: PathBuf,
    pub app_roles: Vec<String>,
    pub timeout: Duration,
    pub sequence_margin: i64,
}

/// Timestamped step lines, for a terminal and for a log file.
struct Log<'a> {
    started: Instant,
    /// Where the lines go (the command prints them).
    out: &'a dyn Fn(String),
}

impl Log<'_> {
    fn say(&self, line: impl AsRef<str>) {
        (self.out)(format!(
            "[{:>7.3}s] {}",
            self.started.elapsed().as_secs_f64(),
            line.as_ref()
        ));
    }
}

/// One side of the switch: a plain SQL connection and which database it is.
struct Side {
    client: std::sync::Arc<Client>,
    address: String,
    /// The database's name, as `ALTER ROLE ... IN DATABASE` takes it.
    db: String,
}

impl Side {
    async fn new(client: std::sync::Arc<Client>, endpoint: &Endpoint) -> Result<Side> {
        let address = endpoint.address();
        let db = client
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(|e| Error::postgres(format!("reading the database name on {address}"), &e).into_definite())?
            .get(0);
        Ok(Side { client, address, db })
    }

    fn err<'a>(&'a self, what: &'a str) -> impl Fn(tokio_postgres::Error) -> Error + 'a {
        move |e| Error::postgres(format!("{what} on {}", self.address), &e).into_definite()
    }
}

/// What has been changed so far, to undo on failure.
#[derive(Default)]
struct Done {
    /// Roles fenced on the side being left, with their previous database-level setting.
    fenced: Vec<(String, Option<String>)>,
    /// Sequences moved on the side being entered.
    moved: Vec<sequences::Moved>,
    /// Roles un-fenced on the side being entered, with the setting they had.
    unfenced: Vec<(String, Option<String>)>,
    /// The reverse bridge's slot was created by this run (with its checkpoint row).
    reverse_created: bool,
    /// So was its publication.
    reverse_publication_created: bool,
}

/// What keeps `reverse` from being the bridge a switchover hands over to, before the catalogs
/// are read: it streams this bridge's target back to its source with a slot of its own
/// (compared by server identity, see [`pairing`]), and both tag and skip replication origins
/// so they can run at once (`ready --reverse` uses it). `Ok(Some(problem))` when it cannot;
/// `Err` when a server needed to tell cannot be reached.
pub async fn reverse_problem(config: &Config, reverse: &Config) -> Result<Option<String>> {
    if let Some(problem) = pairing::pairing_problem(config, reverse).await? {
        return Ok(Some(problem));
    }
    Ok(bridges_can_run_both_ways(config, reverse).err().map(|e| e.to_string()))
}

/// The switchover, step by step; `say` gets every line (the timestamped log, the reverse
/// bridge's setup, the closing key=value line). Returns the exit code: 1 when it was undone, 2
/// when undoing failed.
pub async fn run(config: &Config, options: &Options, say: &dyn Fn(String)) -> Result<i32> {
    if options.app_roles.is_empty() {
        return Err(Error::definite(
            "name the application's roles to fence with --app-role ROLE (repeat it for each)",
        ));
    }
    let reverse = Config::load(&options.reverse)?;
    check_pairing(config, &reverse).await?;
    let log = Log {
        started: Instant::now(),
        out: say,
    };
    let left = Side::new(
        std::sync::Arc::new(connect_green_sql(config).await.map_err(Error::into_definite)?),
        &config.green,
    )
    .await?;
    let entered = Side::new(
        crate::connect::connect_blue(&config.blue)
            .await
            .map_err(Error::into_definite)?,
        &config.blue,
    )
    .await?;
    let switch = Switch {
        config,
        options,
        log: &log,
        left: &left,
        entered: &entered,
        reverse: &reverse,
    };
    log.say(format!(
        "switchover of the writes of {} from {} to {}",
        options.app_roles.join(", "),
        left.address,
        entered.address
    ));
    switch.check_ready().await?;
    let mut done = Done::default();
    switch.set_up_reverse(&mut done).await?;

    let window = Instant::now();
    let mut steps: Vec<(&str, Duration)> = Vec::new();
    let summary = match switch.steps(&mut done, &mut steps).await {
        Ok(summary) => summary,
        Err(e) => {
            log.say(format!("FAILED: {e}"));
            log.say("undoing every step so far");
            return Ok(if undo(&log, &left, &entered, &reverse, &mut done).await {
                log.say(format!(
                    "switchover aborted; writes stay on {}, everything is as it was before",
                    left.address
                ));
                1
            } else {
                log.say("switchover aborted, and undoing it failed: fix the steps listed above by hand");
                2
            });
        }
    };
    switch.report(&summary, window.elapsed(), &steps);
    Ok(0)
}

struct Summary {
    reverse_from: Lsn,
    reverse_streaming: bool,
}

/// One switchover: the bridge, its reverse, both sides, what was asked, and the log.
struct Switch<'a> {
    config: &'a Config,
    options: &'a Options,
    log: &'a Log<'a>,
    /// The side whose writes move away (this bridge's source).
    left: &'a Side,
    /// The side the writes move to (this bridge's target).
    entered: &'a Side,
    reverse: &'a Config,
}

impl Switch<'_> {
    /// Checks that change nothing: the roles, the plan, and that the bridge streams.
    async fn check_ready(&self) -> Result<()> {
        let (config, left, entered) = (self.config, self.left, self.entered);
        for side in [left, entered] {
            preflight(side, &self.options.app_roles).await?;
        }
        bridges_can_run_both_ways(config, self.reverse)?;
        // Blue must hold what the plan says before the writes move there.
        if let Some(findings) = crate::drift::check(config, &left.client, &entered.client)
            .await
            .map_err(Error::into_definite)?
            .filter(|f| !f.is_empty())
        {
            return Err(Error::definite(format!(
                "green's or blue's catalog no longer matches the plan `pgbridge setup` accepted, so {} may be missing \
                 changes; nothing was fenced:\n{}\n{}",
                entered.address,
                crate::drift::describe(&findings),
                crate::drift::fix(config)
            )));
        }
        let streaming = slot::slot_state(&left.client, &config.slot).await?.map(|s| s.active);
        if streaming != Some(true) {
            return Err(Error::definite(format!(
                "the bridge of {} is not streaming (slot {} on {} is {}); start `pgbridge run -c {}` and let it catch up first",
                config.path.display(),
                config.slot,
                left.address,
                if streaming.is_some() { "inactive" } else { "missing" },
                config.path.display()
            )));
        }
        self.log.say(format!(
            "checked: roles exist on both sides and may be fenced; the bridge of {} is streaming",
            config.path.display()
        ));
        Ok(())
    }

    /// Step 0: the reverse bridge, set up by the `setup` operation unless it is; undone (and
    /// nothing fenced) when that fails.
    async fn set_up_reverse(&self, done: &mut Done) -> Result<()> {
        let (reverse, entered) = (self.reverse, self.entered);
        self.log.say(format!(
            "0/5 reverse bridge ({}): set up from {} to {}",
            self.options.reverse.display(),
            entered.address,
            self.left.address
        ));
        done.reverse_created = slot::slot_state(&entered.client, &reverse.slot).await?.is_none();
        done.reverse_publication_created =
            !crate::mapping::green_catalog::publication_exists(&entered.client, &reverse.publication).await?;
        // Creating a logical slot waits for every write transaction open on that side to end.
        let timeout = self.options.timeout;
        let prepared = match tokio::time::timeout(timeout, setup::run(reverse, false, 1, &mut |line| (self.log.out)(line))).await {
            Ok(result) => result,
            Err(_) => Err(Error::definite(format!(
                "setting up the reverse bridge took longer than {timeout:?}: creating its slot on {} waits for every write \
                 transaction open there to end (see pg_stat_activity)",
                entered.address
            ))),
        };
        if let Err(e) = prepared {
            undo(self.log, self.left, entered, reverse, done).await;
            return Err(e.hint("nothing was fenced"));
        }
        Ok(())
    }

    /// Steps 1 to 5, recording what they changed in `done` and how long each took in `steps`.
    async fn steps(&self, done: &mut Done, steps: &mut Vec<(&'static str, Duration)>) -> Result<Summary> {
        let deadline = Instant::now() + self.options.timeout;
        let t = Instant::now();
        self.fence(done, deadline).await?;
        steps.push(("fence", t.elapsed()));
        let t = Instant::now();
        self.catch_up(deadline).await?;
        steps.push(("catch_up", t.elapsed()));
        let t = Instant::now();
        self.sync_sequences(done).await?;
        steps.push(("sequences", t.elapsed()));
        let t = Instant::now();
        let summary = self.reverse_position().await?;
        steps.push(("reverse", t.elapsed()));
        let t = Instant::now();
        self.unfence(done).await?;
        steps.push(("unfence", t.elapsed()));
        Ok(summary)
    }

    /// Step 1: fence the roles on the side being left, end their sessions, and wait until
    /// none of their write transactions remains.
    async fn fence(&self, done: &mut Done, deadline: Instant) -> Result<()> {
        let (left, roles) = (self.left, &self.options.app_roles);
        for role in roles {
            let previous = read_only_setting(left, role).await?;
            set_read_only(left, role, Some("on")).await?;
            done.fenced.push((role.clone(), previous));
        }
        let terminated: i64 = left
            .client
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND usename = ANY($1) AND pid <> pg_backend_pid()",
                &[roles],
            )
            .await
            .map_err(left.err("terminating the application's sessions"))?
            .get(0);
        self.log.say(format!(
            "1/5 fenced {} on {}: new sessions are read-only, {terminated} session(s) terminated",
            roles.join(", "),
            left.address
        ));
        loop {
            let writers: i64 = left
                .client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = ANY($1) \
                     AND backend_xid IS NOT NULL",
                    &[roles],
                )
                .await
                .map_err(left.err("reading sessions"))?
                .get(0);
            if writers == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::definite(format!(
                    "{writers} write transaction(s) of the fenced roles still open on {} after {:?}",
                    left.address, self.options.timeout
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        self.log.say(format!(
            "    no write transaction of theirs remains on {}",
            left.address
        ));
        Ok(())
    }

    /// Step 2: wait until the side being entered has applied a marker written on the other.
    async fn catch_up(&self, deadline: Instant) -> Result<()> {
        let (left, entered) = (self.left, self.entered);
        let marker = wait::write_marker(&left.client, "pgbridge.switchover").await?;
        if let Err(lsn) = wait::until_applied(&entered.client, self.config, marker, deadline, POLL).await? {
            return Err(Error::definite(format!(
                "{} did not catch up with {} within {:?}: its checkpoint {lsn} is {} bytes short of the marker {marker}",
                entered.address,
                left.address,
                self.options.timeout,
                lsn.bytes_until(marker)
            )));
        }
        self.log.say(format!(
            "2/5 {} has everything {} committed (marker {marker})",
            entered.address, left.address
        ));
        Ok(())
    }

    /// Step 3: the sequences of the side being entered move to the other side's values.
    async fn sync_sequences(&self, done: &mut Done) -> Result<()> {
        let mut lines = Vec::new();
        done.moved = sequences::sync(
            self.config,
            &self.left.client,
            &self.entered.client,
            self.options.sequence_margin,
            &mut |line| lines.push(line),
        )
        .await?;
        self.log.say(format!(
            "3/5 sequences on {}: {}",
            self.entered.address,
            lines.last().map_or("", String::as_str)
        ));
        Ok(())
    }

    /// Step 4: where the reverse bridge will start, and whether it streams already.
    async fn reverse_position(&self) -> Result<Summary> {
        let (entered, reverse) = (self.entered, self.reverse);
        let (reverse_from, reverse_streaming) = reverse_position(entered, reverse).await?;
        let wal: String = entered
            .client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(entered.err("reading the WAL position"))?
            .get(0);
        self.log.say(format!(
            "4/5 reverse bridge: slot {} on {} holds every change after {reverse_from} (WAL now at {wal}); {}",
            reverse.slot,
            entered.address,
            if reverse_streaming {
                "it is streaming"
            } else {
                "it is not running yet"
            }
        ));
        Ok(Summary {
            reverse_from,
            reverse_streaming,
        })
    }

    /// Step 5: lift the fence of the roles on the side being entered, where there is one.
    async fn unfence(&self, done: &mut Done) -> Result<()> {
        let (entered, roles) = (self.entered, &self.options.app_roles);
        let mut unfenced = Vec::new();
        for role in roles {
            let previous = read_only_setting(entered, role).await?;
            if previous.is_some() {
                set_read_only(entered, role, None).await?;
                done.unfenced.push((role.clone(), previous));
                unfenced.push(role.as_str());
            }
        }
        self.log.say(if unfenced.is_empty() {
            format!(
                "5/5 {} was not fenced for {}: nothing to lift",
                entered.address,
                roles.join(", ")
            )
        } else {
            format!("5/5 un-fenced {} on {}", unfenced.join(", "), entered.address)
        });
        Ok(())
    }

    /// The closing lines: the write-unavailability window and its steps, on the log and as
    /// one key=value line.
    fn report(&self, summary: &Summary, unavailable: Duration, steps: &[(&str, Duration)]) {
        let (left, entered) = (self.left, self.entered);
        self.log.say(format!(
            "done: the application may write on {} only; write-unavailability window {:.3}s ({})",
            entered.address,
            unavailable.as_secs_f64(),
            steps
                .iter()
                .map(|(name, d)| format!("{name} {:.3}s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if !summary.reverse_streaming {
            self.log.say(format!(
                "the reverse bridge is not running yet: start `pgbridge run -c {}`; until then its slot keeps every write",
                self.options.reverse.display()
            ));
        }
        (self.log.out)(format!(
            "switchover=done from={} to={} write_unavailable_seconds={:.3} {} reverse_slot={} reverse_from={}",
            left.address,
            entered.address,
            unavailable.as_secs_f64(),
            steps
                .iter()
                .map(|(name, d)| format!("{name}_seconds={:.3}", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" "),
            self.reverse.slot,
            summary.reverse_from
        ));
    }
}
