//! Finding the mapping for a green table and planning it against blue's live catalog; shared by
//! `run` (on every Relation message), `setup` and `check`.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use super::catalog;
use super::file::{self, MappingFile};
use super::{plan, GreenTable, TablePlan};
use crate::config::Config;
use crate::error::{Error, Result};

/// A green table's plan with blue's table as read, or why it does not plan.
pub type PlanResult = Result<(Arc<TablePlan>, catalog::BlueTable)>;

/// Green partitions streamed under their own names, by (schema, table), and the partitioned
/// table each belongs to.
type Partitions = HashMap<(String, String), (String, String)>;

/// The mapping files of a configuration and its implicit/strict settings.
#[derive(Clone, Debug)]
pub struct Mappings {
    pub files: Vec<MappingFile>,
    implicit: bool,
    strict: bool,
    config_path: std::path::PathBuf,
    /// Green partitions streamed under their own names, and the partitioned table each
    /// belongs to (from green's catalog at start; a Relation message does not say).
    /// Shared by the clones `run` hands its applier, lanes and catalog check, so that a
    /// partition the check finds is known to the applier too.
    roots: Arc<std::sync::RwLock<Partitions>>,
    /// The accepted plan `run` holds every Relation message to (see [`crate::drift`]).
    baseline: Option<super::signature::Baseline>,
    /// Green tables a replicated TRUNCATE was applied to whose partitions' new storage `run`'s
    /// catalog check has not seen yet: that storage is explained.
    truncated: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Index into `files` by source (green) and by target (blue) table.
    by_source: Arc<HashMap<(String, String), usize>>,
    by_target: Arc<HashMap<(String, String), usize>>,
}

impl Mappings {
    pub fn load(config: &Config) -> Result<Self> {
        let files = file::load_dir(&config.mapping_dir)?;
        let index = |key: fn(&MappingFile) -> &(String, String)| {
            Arc::new(files.iter().enumerate().map(|(i, f)| (key(f).clone(), i)).collect())
        };
        Ok(Mappings {
            by_source: index(|f| &f.source),
            by_target: index(|f| &f.target),
            files,
            implicit: config.implicit,
            strict: config.strict,
            config_path: config.path.clone(),
            roots: Arc::default(),
            baseline: None,
            truncated: Arc::default(),
        })
    }

    /// The partitions (qualified) streamed under their own names that map through partitioned
    /// table `root` (qualified), as green's catalog listed them at start.
    pub fn partitions_of(&self, root: &str) -> Vec<String> {
        self.roots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, (s, n))| format!("{s}.{n}") == root)
            .map(|((s, n), _)| format!("{s}.{n}"))
            .collect()
    }

    /// A replicated TRUNCATE of green table `qualified` was applied.
    pub fn note_truncate(&self, qualified: &str) {
        self.truncated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(qualified.to_string());
    }

    /// Whether [`Mappings::note_truncate`] saw a TRUNCATE of `qualified` that no new storage
    /// has been explained by yet; the note goes with this call when it is there. A note stays
    /// until the catalog shows the storage it explains (the TRUNCATE may be applied before or
    /// after a reading of the catalogs).
    pub fn explains_truncate(&self, qualified: &str) -> bool {
        self.truncated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(qualified)
    }

    /// The same mappings without `strict`: `verify` compares what the mappings say over
    /// green's whole table, columns the stream does not carry included.
    pub fn lenient(&self) -> Mappings {
        Mappings {
            strict: false,
            ..self.clone()
        }
    }

    /// Holds plans to `baseline` from now on.
    pub fn hold_to(&mut self, baseline: super::signature::Baseline) {
        self.baseline = Some(baseline);
    }

    pub fn baseline(&self) -> Option<&super::signature::Baseline> {
        self.baseline.as_ref()
    }

    /// Whether green table `schema.table` is part of the accepted plan (always, without one):
    /// its Relation messages are planned at once, the others at their first change (a
    /// partition's Relation message that comes with its root's, say).
    pub fn expects(&self, qualified: &str) -> bool {
        match &self.baseline {
            None => true,
            Some(b) => b.lock().unwrap_or_else(|e| e.into_inner()).contains_key(qualified),
        }
    }

    /// Remembers which of green's streamed relations are partitions of which table, so that a
    /// Relation message for a partition plans like [`GreenTable`]s read from the catalog.
    pub fn learn_partitions(&mut self, tables: &[GreenTable]) {
        let roots = tables
            .iter()
            .filter_map(|t| {
                let root = t.facts.as_ref()?.root.clone()?;
                Some(((t.namespace.clone(), t.name.clone()), root))
            })
            .collect();
        *self.roots.write().unwrap_or_else(|e| e.into_inner()) = roots;
    }

    /// The blue table green table `schema.name` maps onto by its file, or by name.
    pub fn target_of(&self, schema: &str, name: &str) -> (String, String) {
        match self.file_for(schema, name) {
            Some(f) => f.target.clone(),
            None => (schema.to_string(), name.to_string()),
        }
    }

    /// The mapping file reading green table `schema.name`, if any.
    pub fn file_for(&self, schema: &str, name: &str) -> Option<&MappingFile> {
        let i = self.by_source.get(&(schema.to_string(), name.to_string()))?;
        self.files.get(*i)
    }

    /// The mapping file writing blue table `schema.name`, if any.
    fn file_into(&self, schema: &str, name: &str) -> Option<&MappingFile> {
        let i = self.by_target.get(&(schema.to_string(), name.to_string()))?;
        self.files.get(*i)
    }

    /// Plans every table of `greens`, each as [`Mappings::plan_with_blue`] would, reading the
    /// blue tables they can map onto in one go (a catalog read per table would make planning
    /// thousands of tables take thousands of round trips). An error reading blue is returned
    /// as a whole; each table's own outcome is in the list, in the order of `greens`.
    pub async fn plan_all(&self, client: &Client, greens: &[GreenTable]) -> Result<Vec<PlanResult>> {
        let blue = catalog::BlueTables::read(client, self.blue_names(greens)).await?;
        let mut out = Vec::with_capacity(greens.len());
        for green in greens {
            out.push(self.plan_in(&blue, green).await);
        }
        Ok(out)
    }

    /// Every blue table that planning `greens` may look at: each table's target, and for a
    /// partition, a blue table of its own name and its partitioned table's target.
    pub fn blue_names(&self, greens: &[GreenTable]) -> Vec<(String, String)> {
        let roots = self.roots.read().unwrap_or_else(|e| e.into_inner());
        let mut names = Vec::with_capacity(greens.len());
        for green in greens {
            names.push(self.target_of(&green.namespace, &green.name));
            let key = (green.namespace.clone(), green.name.clone());
            let root = green
                .facts
                .as_ref()
                .and_then(|f| f.root.clone())
                .or_else(|| roots.get(&key).cloned());
            if let Some((schema, name)) = root {
                names.push(self.target_of(&schema, &name));
                names.push(key);
            }
        }
        names
    }

    /// Plans `green` onto its blue table, read from `client`'s catalog.
    pub async fn plan(&self, client: &Client, green: &GreenTable) -> Result<Arc<TablePlan>> {
        self.plan_with_blue(client, green).await.map(|(plan, _)| plan)
    }

    /// [`Mappings::plan`], also returning blue's table as read.
    pub async fn plan_with_blue(&self, client: &Client, green: &GreenTable) -> PlanResult {
        self.plan_in(&catalog::BlueTables::live(client), green).await
    }

    /// [`Mappings::plan_with_blue`] with blue's tables from `blue`.
    pub async fn plan_in(&self, blue: &catalog::BlueTables<'_>, green: &GreenTable) -> PlanResult {
        let key = (green.namespace.clone(), green.name.clone());
        let root = green
            .facts
            .as_ref()
            .and_then(|f| f.root.clone())
            .or_else(|| self.roots.read().unwrap_or_else(|e| e.into_inner()).get(&key).cloned());
        if let Some((schema, name)) = root {
            // A partition streamed under its own name maps through its own mapping file or a
            // same-named blue table (the same partitions on both sides), else through the
            // mapping of the partitioned table it belongs to.
            let own = self.file_for(&green.namespace, &green.name).is_some()
                || (self.implicit && blue.get(&green.namespace, &green.name).await?.is_some());
            if !own {
                let as_root = GreenTable {
                    namespace: schema.clone(),
                    name: name.clone(),
                    ..green.clone()
                };
                let (plan, blue) = self.plan_table(blue, &as_root).await?;
                let mut plan = (*plan).clone();
                plan.green = green.clone();
                plan.green_name = green.qualified().into();
                plan.partition_of = Some(format!("{schema}.{name}"));
                return Ok((Arc::new(plan), blue));
            }
        }
        self.plan_table(blue, green).await
    }

    async fn plan_table(&self, blue: &catalog::BlueTables<'_>, green: &GreenTable) -> PlanResult {
        let file = self.file_for(&green.namespace, &green.name);
        let (schema, name) = match file {
            Some(f) => f.target.clone(),
            None if self.implicit => {
                if let Some(f) = self.file_into(&green.namespace, &green.name) {
                    return Err(Error::definite(format!(
                        "green table {} would map by name onto blue table {}.{}, which {} already fills from {}.{}; \
                         add green table {} to [mapping] exclude in {} (or give it a mapping file)",
                        green.qualified(),
                        f.target.0,
                        f.target.1,
                        f.path.display(),
                        f.source.0,
                        f.source.1,
                        green.qualified(),
                        self.config_path.display()
                    )));
                }
                (green.namespace.clone(), green.name.clone())
            }
            None => {
                return Err(Error::definite(format!(
                    "green table {} has no mapping file and [mapping] implicit = false in {}; add a mapping file \
                     or list the table in [mapping] exclude",
                    green.qualified(),
                    self.config_path.display()
                )))
            }
        };
        let blue = blue.get(&schema, &name).await?.ok_or_else(|| match file {
            Some(f) => Error::definite(format!(
                "{}: target {}.{} does not exist on blue; create it or fix target",
                f.path.display(),
                shown(&schema),
                shown(&name)
            )),
            None => Error::definite(format!(
                "green table {} has no table of that name on blue; create it on blue, add a mapping file for it, \
                 or add \"{}\" to [mapping] exclude in {}",
                green.qualified(),
                green.qualified(),
                self.config_path.display()
            )),
        })?;
        Ok((plan(green, &blue, file, self.strict)?, blue))
    }
}

/// `name` as written in SQL: bare when PostgreSQL would not quote it, else quoted, so that an odd
/// name (`t; DROP TABLE x`) reads as one name in a message.
fn shown(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.to_string()
    } else {
        crate::sql::ident(name)
    }
}

/// Resolves type OIDs to quoted, schema-qualified names on blue. PostgreSQL's built-in types
/// have the same OIDs everywhere; for the others green sends a Type message with the name,
/// which must exist on blue too.
#[derive(Default, Debug)]
pub struct TypeNames {
    names: HashMap<u32, String>,
}

/// OIDs below this are assigned by initdb and the same on every server (FirstGenbkiObjectId).
const FIRST_NON_BUILTIN_OID: u32 = 10_000;

impl TypeNames {
    /// Records a Type message from green.
    pub fn learn(&mut self, oid: u32, namespace: &str, name: &str) {
        self.names.insert(oid, crate::sql::qualified(namespace, name));
    }

    /// Looks up the built-in types among `oids` on blue so that [`TypeNames::get`] knows them.
    pub async fn resolve_builtins(&mut self, client: &Client, oids: &[u32]) -> Result<()> {
        let missing: Vec<u32> = oids
            .iter()
            .copied()
            .filter(|o| *o < FIRST_NON_BUILTIN_OID && !self.names.contains_key(o))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let rows = client
            .query(
                "SELECT t.oid, quote_ident(n.nspname) || '.' || quote_ident(t.typname) \
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = ANY($1)",
                &[&missing],
            )
            .await
            .map_err(|e| Error::postgres("reading type names on blue", &e))?;
        for row in rows {
            self.names.insert(row.get(0), row.get(1));
        }
        Ok(())
    }

    pub fn get(&self, oid: u32) -> Option<String> {
        self.names.get(&oid).cloned()
    }
}
