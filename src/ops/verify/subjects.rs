//! Which tables `verify` compares: every table green streams, every table the accepted plan
//! holds and every mapping file's source, with what is known about each beyond its rows.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tokio_postgres::Client;

use crate::config::Config;
use crate::drift;
use crate::error::{Error, Result};
use crate::mapping::catalog::BlueTables;
use crate::mapping::resolve::Mappings;
use crate::mapping::signature::Signature;
use crate::mapping::{green_catalog, GreenTable, TablePlan};

/// A table verify looks at: every table green streams, every table the accepted plan holds
/// and every mapping file's source, whether or not the publication still carries it.
pub struct Subject {
    pub(super) green_table: String,
    pub(super) blue_table: String,
    /// Schema and name, for `--table`.
    pub(super) green_name: (String, String),
    pub(super) blue_name: (String, String),
    /// What the mapping says, planned over green's table as it is (generated columns
    /// included, so a column that stopped being streamed is still compared); `None` when it
    /// cannot be planned.
    pub(super) plan: Option<Arc<TablePlan>>,
    pub(super) problems: Vec<String>,
}

pub(super) async fn subjects(config: &Config, green: &Client, blue: &Client, settings: &str) -> Result<Vec<Subject>> {
    let mut mappings = Mappings::load(config)?;
    let published = green_catalog::publication_exists(green, &config.publication).await?;
    let streamed = if published {
        match green_catalog::tables(green, config, true).await {
            Ok(t) => t,
            Err(e) if e.sqlstate().is_none() && !e.is_transient() => Vec::new(),
            Err(e) => return Err(e),
        }
    } else {
        Vec::new()
    };
    mappings.learn_partitions(&streamed);
    // Blue's tables read in one go, not one table at a time.
    let mut blue_tables = BlueTables::read(blue, mappings.blue_names(&streamed)).await?;
    let (current, by_root) = plan_streamed(&mappings, green, &blue_tables, &streamed, settings).await?;
    let accepted = drift::read_accepted(blue, config).await?.unwrap_or_default();
    let (findings, _) = drift::compare(config, &accepted, &current);
    let lenient = mappings.lenient();
    let names = names_to_compare(config, &by_root, &streamed, &accepted, &lenient);
    if names.is_empty() {
        // Nothing compared is not "identical": a gate must not pass on it.
        return Err(Error::definite(match published {
            false => format!(
                "nothing to compare: publication {} does not exist on green and blue holds no accepted plan; \
                 run `pgbridge setup` first",
                config.publication
            ),
            true => format!(
                "nothing to compare: publication {} carries no table and no mapping file names one",
                config.publication
            ),
        }));
    }
    blue_tables
        .read_more(names.iter().map(|(s, n)| lenient.target_of(s, n)).collect())
        .await?;
    let known = Known {
        config,
        green,
        blue,
        blue_tables: &blue_tables,
        lenient: &lenient,
        findings: &findings,
        by_root: &by_root,
    };
    let mut out = Vec::new();
    for (schema, name) in names {
        out.push(known.subject(schema, name).await?);
    }
    Ok(out)
}

/// The plan as `run` would hold it (for the drift against the accepted one), and the tables
/// to compare by name: partitions are compared through the table they belong to, as a whole.
async fn plan_streamed(
    mappings: &Mappings,
    green: &Client,
    blue: &BlueTables<'_>,
    streamed: &[GreenTable],
    settings: &str,
) -> Result<(drift::Current, BTreeMap<String, GreenTable>)> {
    let mut current = drift::Current::default();
    let mut by_root: BTreeMap<String, GreenTable> = BTreeMap::new();
    for t in streamed {
        match mappings.plan_in(blue, t).await {
            Ok((plan, blue_table)) => {
                current
                    .signatures
                    .push(Signature::of(&plan, &blue_table).with_settings(settings));
                if let Some(root) = &plan.partition_of {
                    // Read once for all its partitions.
                    if !by_root.contains_key(root) {
                        if let Some(r) = green_catalog::partitioned_table_of(green, t).await? {
                            by_root.insert(root.clone(), r);
                        }
                    }
                    continue;
                }
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => current.failures.push((t.qualified(), e.to_string())),
        }
        by_root.insert(t.qualified(), t.clone());
    }
    Ok((current, by_root))
}

/// The green tables to compare: the streamed ones (as their roots), then those only the
/// accepted plan or a mapping file names, unless excluded.
fn names_to_compare(
    config: &Config,
    by_root: &BTreeMap<String, GreenTable>,
    streamed: &[GreenTable],
    accepted: &BTreeMap<String, Signature>,
    lenient: &Mappings,
) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = by_root
        .values()
        .map(|t| (t.namespace.clone(), t.name.clone()))
        .collect();
    // Sets, not lists: a search through every table per table would grow with their square.
    let leaves: HashSet<String> = streamed.iter().map(|t| t.qualified()).collect();
    let mut extra: Vec<(String, String)> = accepted
        .keys()
        .filter(|k| !leaves.contains(*k))
        .filter_map(|k| k.split_once('.').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect();
    extra.extend(lenient.files.iter().map(|f| f.source.clone()));
    let mut seen: HashSet<(String, String)> = names.iter().cloned().collect();
    for n in extra {
        let qualified = format!("{}.{}", n.0, n.1);
        if !seen.contains(&n) && !by_root.contains_key(&qualified) && !config.is_excluded(&n.0, &n.1) {
            seen.insert(n.clone());
            names.push(n);
        }
    }
    names
}

/// What [`subjects`] knows once the streamed tables are planned, to describe each table.
struct Known<'a> {
    config: &'a Config,
    green: &'a Client,
    blue: &'a Client,
    blue_tables: &'a BlueTables<'a>,
    lenient: &'a Mappings,
    findings: &'a [drift::Finding],
    by_root: &'a BTreeMap<String, GreenTable>,
}

impl Known<'_> {
    /// Green table `schema.name` as verify compares it, with its problems.
    async fn subject(&self, schema: String, name: String) -> Result<Subject> {
        let (config, blue) = (self.config, self.blue);
        let qualified = format!("{schema}.{name}");
        let mut problems: Vec<String> = self
            .findings
            .iter()
            .filter(|f| f.green_table == qualified)
            .flat_map(|f| f.changes.clone())
            .collect();
        let green_table = match self.by_root.get(&qualified) {
            Some(t) => Some(t.clone()),
            None => {
                if problems.is_empty() {
                    problems.push(format!(
                        "green table {qualified} is not streamed (publication {} does not carry it), so its changes do \
                         not reach blue",
                        config.publication
                    ));
                }
                green_catalog::table_directly(self.green, &schema, &name).await?
            }
        };
        let target = self.lenient.target_of(&schema, &name);
        let target_text = format!("{}.{}", target.0, target.1);
        let Some(green_table) = green_table else {
            problems.push(format!("green table {qualified} does not exist on green"));
            return Ok(Subject {
                green_table: qualified,
                blue_table: target_text,
                green_name: (schema, name),
                blue_name: target,
                plan: None,
                problems,
            });
        };
        let planned = self
            .lenient
            .plan_in(self.blue_tables, &with_unstreamed_generated(&green_table))
            .await;
        let (plan, blue_name) = match planned {
            Ok((p, b)) => (Some(p), (b.schema, b.name)),
            Err(e) if e.is_transient() => return Err(e),
            // A mapping that does not plan is a configuration error, not a difference; a blue
            // table that is missing is a difference.
            Err(e) if blue_table_exists(blue, &target).await? => return Err(e.into_definite()),
            Err(e) => {
                problems.push(e.to_string());
                (None, target)
            }
        };
        Ok(Subject {
            green_table: qualified,
            blue_table: format!("{}.{}", blue_name.0, blue_name.1),
            green_name: (schema, name),
            blue_name,
            plan,
            problems,
        })
    }
}

/// Whether blue table `schema.name` exists.
async fn blue_table_exists(blue: &Client, (schema, name): &(String, String)) -> Result<bool> {
    Ok(crate::mapping::catalog::load_table(blue, schema, name).await?.is_some())
}

/// Green's table with its generated columns as if streamed: blue columns fed by their names
/// are compared with them even though the stream does not carry them.
fn with_unstreamed_generated(t: &GreenTable) -> GreenTable {
    let mut t = t.clone();
    if let Some(facts) = &t.facts {
        for (column, why) in &facts.unpublished {
            if *why == green_catalog::Unpublished::Generated && !t.columns.iter().any(|c| c.name == column.name) {
                t.columns.push(column.clone());
            }
        }
    }
    t
}

/// The plans `--table wanted` names: a green or a blue table, written as mapping files write
/// `target` and `source` (`schema.table` or `table`, unquoted parts folded to lower case,
/// quoted ones as written: `"Sales Dept"."Order"`); a name without schema matches in any
/// schema. The unquoted text verify prints (`Sales Dept.Order`) is taken too, when it names
/// nothing the other way.
pub(super) fn select_tables(subjects: Vec<Subject>, wanted: &str) -> Result<Vec<Subject>> {
    let parsed = crate::config::parse_table_name(wanted);
    let is_named = |(schema, table): &(String, String)| {
        parsed
            .as_ref()
            .is_some_and(|(s, t)| t == table && s.as_deref().map_or(true, |s| s == schema))
    };
    let shown = |name: &str| name == wanted || name.rsplit('.').next() == Some(wanted);
    let (named, rest): (Vec<_>, Vec<_>) = subjects
        .into_iter()
        .partition(|s| is_named(&s.green_name) || is_named(&s.blue_name));
    if !named.is_empty() {
        return Ok(named);
    }
    let shown: Vec<_> = rest
        .into_iter()
        .filter(|s| shown(&s.green_table) || shown(&s.blue_table))
        .collect();
    if !shown.is_empty() {
        return Ok(shown);
    }
    Err(Error::definite(match parsed {
        Some(_) => format!(
            "no mapped table is called {wanted}; name a green or blue table as schema.table, quoting names as \
             mapping files do (\"Sales Dept\".\"Order\"; see `pgbridge check` for the mapped tables)"
        ),
        None => format!(
            "--table {wanted:?} is not a table name; write schema.table or table, quoting names as mapping files \
             do: '\"Sales Dept\".\"Order\"'"
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(green: (&str, &str), blue: (&str, &str)) -> Subject {
        Subject {
            green_table: format!("{}.{}", green.0, green.1),
            blue_table: format!("{}.{}", blue.0, blue.1),
            green_name: (green.0.to_string(), green.1.to_string()),
            blue_name: (blue.0.to_string(), blue.1.to_string()),
            plan: None,
            problems: Vec::new(),
        }
    }

    fn selected(wanted: &str) -> std::result::Result<Vec<String>, String> {
        let all = vec![
            subject(("public", "orders"), ("legacy", "order_rows")),
            subject(("Sales Dept", "Order"), ("Sales Dept", "Order")),
        ];
        select_tables(all, wanted)
            .map(|v| v.into_iter().map(|s| s.green_table).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_table_is_named_by_its_green_or_blue_name_with_or_without_schema() {
        assert_eq!(selected("orders"), Ok(vec!["public.orders".to_string()]));
        assert_eq!(selected("public.orders"), Ok(vec!["public.orders".to_string()]));
        assert_eq!(selected("legacy.order_rows"), Ok(vec!["public.orders".to_string()]));
        assert_eq!(
            selected("\"Sales Dept\".\"Order\""),
            Ok(vec!["Sales Dept.Order".to_string()])
        );
        // The unquoted text verify prints is taken when it names nothing the other way.
        assert_eq!(selected("Sales Dept.Order"), Ok(vec!["Sales Dept.Order".to_string()]));
    }

    #[test]
    fn an_unknown_table_is_refused_saying_how_to_name_one() {
        let text = selected("nosuch").expect_err("refused");
        assert!(text.contains("no mapped table is called nosuch"), "{text}");
    }
}
