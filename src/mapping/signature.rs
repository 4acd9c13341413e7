//! What a table's mapping means, in a form that can be stored, compared and explained.
//!
//! A [`Signature`] is everything about a planned table that decides which values blue
//! receives: the green relation (by name and OID), each blue column it feeds and from what
//! (with the types on both sides), the key, the filter, and what only green's catalog knows
//! (the publication's row filter, the partitions). `setup` stores the signatures it accepted
//! on blue; `run` compares every Relation message's plan and, periodically, both catalogs with
//! them, and stops (or, for a change that does not alter any value, carries on) instead of
//! letting blue drift away silently. [`diff`] says in words what changed.
//!
//! Pure: no I/O, so every rule is unit-tested here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::catalog::BlueTable;
use super::TablePlan;

/// Accepted signatures by green table (`schema.table`), shared by the applier, its lanes and
/// `run`'s periodic catalog check; tables found streamed later are added as they come.
pub type Baseline = std::sync::Arc<std::sync::Mutex<BTreeMap<String, Signature>>>;

/// How one blue column is fed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feed {
    /// `green column x` or `expression ...`.
    pub source: String,
    /// Green columns read, with green's type of each.
    pub reads: Vec<(String, String)>,
    /// Blue's declared type, with its modifier.
    pub blue_type: String,
    pub insert_only: bool,
    /// Blue column's position (0: not known).
    #[serde(default)]
    pub blue_attnum: i16,
}

/// What only green's catalog tells (a Relation message does not): compared when both sides
/// were read from the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogSide {
    pub row_filter: Option<String>,
    pub partitions: Vec<String>,
    /// The operations the publication carries (insert, update, delete, truncate).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Position and declared type of each green column the mapping reads.
    #[serde(default)]
    pub columns: BTreeMap<String, (i16, String)>,
    /// Storage of each leaf partition (see `CatalogFacts::partition_storage`).
    #[serde(default)]
    pub partition_storage: BTreeMap<String, i64>,
    /// A partition streamed under its own name: its partitioned table.
    #[serde(default)]
    pub partition_of: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// `schema.table` on green.
    pub green_table: String,
    pub green_oid: u32,
    /// `schema.table` on blue.
    pub blue_table: String,
    /// 0: not known.
    #[serde(default)]
    pub blue_oid: u32,
    /// By blue column.
    pub columns: BTreeMap<String, Feed>,
    /// `blue column <- green column`, in key order.
    pub key: Vec<String>,
    pub filter: Option<String>,
    #[serde(default)]
    pub catalog: Option<CatalogSide>,
    /// The session settings blue evaluates mappings with (TimeZone, search_path, ...; see
    /// [`crate::evaluation`]), when known: a new default on blue changes computed values.
    #[serde(default)]
    pub settings: Option<String>,
}

impl Signature {
    /// The signature of `plan` onto `blue` (blue's table as planned against).
    pub fn of(plan: &TablePlan, blue: &BlueTable) -> Signature {
        let green_col = |g: usize| {
            let c = &plan.green.columns[g];
            (c.name.clone(), plain(&c.type_sql))
        };
        let columns = plan
            .targets
            .iter()
            .map(|t| {
                let column = blue.column(&t.blue_name);
                let feed = Feed {
                    source: t.value.describe(&plan.green),
                    reads: t.reads().iter().map(|&g| green_col(g)).collect(),
                    blue_type: column.map_or_else(|| t.blue_type.clone(), |c| c.declared.clone()),
                    insert_only: t.insert_only,
                    blue_attnum: column.map_or(0, |c| c.attnum),
                };
                (t.blue_name.clone(), feed)
            })
            .collect();
        let key = plan.key_pairs();
        let read: Vec<&str> = plan
            .targets
            .iter()
            .flat_map(|t| t.reads().iter())
            .chain(plan.key.columns().iter().map(|k| &k.green))
            .map(|&g| plan.green.columns[g].name.as_str())
            .collect();
        let catalog = plan.green.facts.as_ref().map(|f| CatalogSide {
            row_filter: f.row_filter.clone(),
            partitions: f.partitions.clone(),
            actions: f.actions.iter().map(|a| a.to_string()).collect(),
            partition_storage: f.partition_storage.iter().cloned().collect(),
            partition_of: f.root.as_ref().map(|(s, n)| format!("{s}.{n}")),
            columns: f
                .positions
                .iter()
                .filter(|(name, _, _)| read.contains(&name.as_str()))
                .map(|(name, attnum, declared)| (name.clone(), (*attnum, declared.clone())))
                .collect(),
        });
        Signature {
            green_table: plan.green_name.to_string(),
            green_oid: plan.green.oid,
            blue_table: plan.blue_name.clone(),
            blue_oid: blue.oid,
            columns,
            key,
            filter: plan.filter.clone(),
            catalog,
            settings: None,
        }
    }

    /// The same, evaluated under `settings`.
    pub fn with_settings(mut self, settings: &str) -> Signature {
        self.settings = Some(settings.to_string());
        self
    }

    /// For storing on blue.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Option<Signature> {
        serde_json::from_str(text).ok()
    }
}

/// What changed from `old` (accepted) to `new` (planned now), in words naming table and
/// columns; empty when every blue value is computed as before.
pub fn diff(old: &Signature, new: &Signature) -> Vec<String> {
    let mut out = Vec::new();
    tables(old, new, &mut out);
    columns(old, new, &mut out);
    key_filter_settings(old, new, &mut out);
    if let (Some(was), Some(now)) = (&old.catalog, &new.catalog) {
        catalog(was, now, new, &mut out);
    }
    out
}

/// The green and blue tables themselves: re-created, or another blue table.
fn tables(old: &Signature, new: &Signature, out: &mut Vec<String>) {
    let green = &new.green_table;
    let blue = &new.blue_table;
    if old.green_oid != new.green_oid {
        out.push(format!(
            "green table {green} was dropped and created again (OID {} -> {}): the DROP is not replicated, so blue \
             table {blue} still holds the old table's rows, and rows written to the new table before it was \
             streamed never reached blue",
            old.green_oid, new.green_oid
        ));
    }
    if old.blue_table == new.blue_table && old.blue_oid != 0 && new.blue_oid != 0 && old.blue_oid != new.blue_oid {
        out.push(format!(
            "blue table {blue} was dropped and created again, or another table took its name (OID {} -> {}): the rows \
             blue held are not in it",
            old.blue_oid, new.blue_oid
        ));
    }
    if old.blue_table != new.blue_table {
        out.push(format!(
            "green table {green} now maps onto blue table {} instead of {}",
            new.blue_table, old.blue_table
        ));
    }
}

/// Blue columns no longer fed, fed otherwise, or newly fed.
fn columns(old: &Signature, new: &Signature, out: &mut Vec<String>) {
    let green = &new.green_table;
    let blue = &new.blue_table;
    for (column, was) in &old.columns {
        match new.columns.get(column) {
            None => out.push(format!(
                "blue column {blue}.{column} is no longer fed (it was fed from {}{}): its values would go stale or \
                 NULL",
                was.source,
                gone_reason(was, new)
            )),
            Some(now) if now.source != was.source => out.push(format!(
                "blue column {blue}.{column} is now fed from {} instead of {}",
                now.source, was.source
            )),
            Some(now) => changed_column(green, blue, column, was, now, out),
        }
    }
    for (column, now) in &new.columns {
        if !old.columns.contains_key(column) {
            out.push(format!(
                "blue column {blue}.{column} is now fed from {} (it was not fed before)",
                now.source
            ));
        }
    }
}

/// A blue column fed from the same source as before: what it reads and how it is written.
fn changed_column(green: &str, blue: &str, column: &str, was: &Feed, now: &Feed, out: &mut Vec<String>) {
    for (name, _) in &was.reads {
        if !now.reads.iter().any(|(n, _)| n == name) {
            out.push(format!(
                "green column {green}.{name}, which {} for blue column {blue}.{column} reads, is gone: \
                 renamed, dropped, turned generated or left out of the publication",
                was.source
            ));
        }
    }
    let same_names = was.reads.iter().zip(&now.reads).filter(|((a, _), (b, _))| a == b);
    for ((name, before), (_, after)) in same_names {
        if before != after {
            out.push(format!(
                "green column {green}.{name}, which feeds blue column {blue}.{column}, changed type from \
                 {before} to {after}"
            ));
        }
    }
    if now.blue_type != was.blue_type {
        out.push(format!(
            "blue column {blue}.{column} changed type from {} to {}",
            was.blue_type, now.blue_type
        ));
    }
    if was.blue_attnum != 0 && now.blue_attnum != 0 && was.blue_attnum != now.blue_attnum {
        out.push(format!(
            "blue column {blue}.{column} is another column now (position {} -> {}): it was renamed away \
             or dropped and a new one took its name, so the values blue held are not in it",
            was.blue_attnum, now.blue_attnum
        ));
    }
    if now.insert_only != was.insert_only {
        out.push(format!(
            "blue column {blue}.{column} is now written {}",
            if now.insert_only {
                "on insert only"
            } else {
                "on insert and update"
            }
        ));
    }
}

/// The key, the filter and blue's session settings.
fn key_filter_settings(old: &Signature, new: &Signature, out: &mut Vec<String>) {
    let blue = &new.blue_table;
    if old.key != new.key {
        out.push(format!(
            "the key of blue table {blue} is now ({}) instead of ({})",
            new.key.join(", "),
            old.key.join(", ")
        ));
    }
    if old.filter != new.filter {
        out.push(format!(
            "the filter of blue table {blue} is now {} instead of {}",
            shown(&new.filter),
            shown(&old.filter)
        ));
    }
    if let (Some(was), Some(now)) = (&old.settings, &new.settings) {
        if was != now {
            out.push(format!(
                "blue evaluates the mapping of {blue} with other session settings now ({now}) than when it was \
                 accepted ({was}): rows written from now on could get other values; set [blue] timezone to pin the \
                 time zone, or change blue's defaults back"
            ));
        }
    }
}

/// What only green's catalog tells: row filter, column positions and types, published
/// actions, partitions and their storage.
fn catalog(was: &CatalogSide, now: &CatalogSide, new: &Signature, out: &mut Vec<String>) {
    let green = &new.green_table;
    let blue = &new.blue_table;
    if was.row_filter != now.row_filter {
        out.push(format!(
            "the publication's row filter for green table {green} is now {} instead of {}: rows that move across \
             it are neither inserted nor deleted on blue",
            shown(&now.row_filter),
            shown(&was.row_filter)
        ));
    }
    for (name, (attnum, declared)) in &was.columns {
        match now.columns.get(name) {
            Some((a, _)) if a != attnum => out.push(format!(
                "green column {green}.{name} is another column now (position {attnum} -> {a}): it was dropped and \
                 added again, or columns were renamed around, so its values changed on green without a replicated \
                 change and blue keeps the old ones"
            )),
            Some((_, d)) if d != declared => out.push(format!(
                "green column {green}.{name} changed its declared type from {declared} to {d}, which may have \
                 rewritten its values on green without a replicated change (blue keeps the old ones)"
            )),
            _ => {}
        }
    }
    let dropped: Vec<&String> = was.actions.iter().filter(|a| !now.actions.contains(a)).collect();
    if !dropped.is_empty() {
        out.push(format!(
            "the publication no longer carries {} for green table {green}: those changes would not reach blue",
            list(&dropped)
        ));
    }
    let attached: Vec<&String> = now.partitions.iter().filter(|p| !was.partitions.contains(p)).collect();
    let detached: Vec<&String> = was.partitions.iter().filter(|p| !now.partitions.contains(p)).collect();
    // A TRUNCATE of single partitions is not replicated (published through the root); one
    // of the whole table is, and `run` takes the new storage as seen once it applied it.
    let rewritten: Vec<&String> = was
        .partition_storage
        .iter()
        .filter(|(p, node)| now.partition_storage.get(*p).is_some_and(|n| n != *node))
        .map(|(p, _)| p)
        .collect();
    if !rewritten.is_empty() {
        out.push(format!(
            "partition(s) {} of green table {green} were truncated or rewritten (their storage changed): a \
             TRUNCATE of single partitions is not replicated when the publication publishes through the root, so \
             blue table {blue} may still hold their rows (after VACUUM FULL or CLUSTER, `pgbridge verify` shows \
             nothing changed)",
            list(&rewritten)
        ));
    }
    if !attached.is_empty() {
        out.push(format!(
            "partition(s) {} were attached to green table {green}: the rows they held when attached never \
             reached blue table {blue} (ATTACH PARTITION is not replicated)",
            list(&attached)
        ));
    }
    if !detached.is_empty() {
        out.push(format!(
            "partition(s) {} were detached from green table {green}: their rows left it on green but remain in \
             blue table {blue} (DETACH PARTITION is not replicated)",
            list(&detached)
        ));
    }
}

/// Why a blue column lost its feed, when the new plan tells.
fn gone_reason(was: &Feed, new: &Signature) -> String {
    let missing: Vec<&str> = was
        .reads
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !new.columns.values().any(|f| f.reads.iter().any(|(n, _)| n == name)))
        .collect();
    if missing.is_empty() {
        String::new()
    } else {
        format!(
            "; green column {} was renamed, dropped, turned generated or left out of the publication",
            missing.join(", ")
        )
    }
}

/// A qualified type name without the quotes its parts do not need, as green's catalog prints
/// it (`quote_ident`): a Type message's name is always quoted, and both must compare equal.
fn plain(name: &str) -> String {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut quoted = false;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                part.push_str("\"\"");
                chars.next();
            }
            '"' => {
                quoted = !quoted;
                part.push('"');
            }
            '.' if !quoted => parts.push(std::mem::take(&mut part)),
            _ => part.push(c),
        }
    }
    parts.push(part);
    parts
        .into_iter()
        .map(|p| {
            let inner = p.strip_prefix('"').and_then(|x| x.strip_suffix('"'));
            match inner {
                Some(i)
                    if i.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                        && i.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$') =>
                {
                    i.to_string()
                }
                _ => p,
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn shown(v: &Option<String>) -> String {
    v.as_ref().map_or_else(|| "none".to_string(), |f| format!("({f})"))
}

fn list(items: &[&String]) -> String {
    items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(source: &str, reads: &[(&str, &str)], blue_type: &str) -> Feed {
        Feed {
            source: source.into(),
            reads: reads.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            blue_type: blue_type.into(),
            insert_only: false,
            blue_attnum: 0,
        }
    }

    fn sig() -> Signature {
        let mut columns = BTreeMap::new();
        columns.insert("id".into(), feed("green column id", &[("id", "int4")], "integer"));
        columns.insert("email".into(), feed("green column email", &[("email", "text")], "text"));
        Signature {
            green_table: "public.customers".into(),
            green_oid: 16400,
            blue_table: "public.customers".into(),
            blue_oid: 0,
            columns,
            key: vec!["id <- id".into()],
            filter: None,
            catalog: Some(CatalogSide::default()),
            settings: Some("TimeZone=UTC".into()),
        }
    }

    #[test]
    fn partitions_with_new_storage_are_drift() {
        let with = |nodes: &[(&str, i64)]| Signature {
            catalog: Some(CatalogSide {
                partitions: nodes.iter().map(|(p, _)| p.to_string()).collect(),
                partition_storage: nodes.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
                ..CatalogSide::default()
            }),
            ..sig()
        };
        let before = with(&[("public.m_1", 100), ("public.m_2", 200)]);
        let one = diff(&before, &with(&[("public.m_1", 100), ("public.m_2", 300)])).join("\n");
        assert!(
            one.contains("partition(s) public.m_2 of green table public.customers were truncated"),
            "{one}"
        );
        assert!(diff(&before, &before).is_empty());
    }

    #[test]
    fn type_names_compare_equal_however_quoted() {
        assert_eq!(plain("\"pg_catalog\".\"int4\""), "pg_catalog.int4");
        assert_eq!(plain("public.mood"), "public.mood");
        assert_eq!(plain("\"Sales\".\"Mood\""), "\"Sales\".\"Mood\"");
        assert_eq!(plain("\"a.b\".\"x\"\"y\""), "\"a.b\".\"x\"\"y\"");
    }

    #[test]
    fn the_same_plan_has_no_changes_and_survives_storage() {
        let s = sig();
        assert!(diff(&s, &s).is_empty());
        assert_eq!(Signature::from_json(&s.to_json()), Some(s));
    }

    #[test]
    fn a_column_that_stops_being_fed_is_named_with_the_reason() {
        let old = sig();
        let mut new = sig();
        new.columns.remove("email");
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(
            changes[0].contains("blue column public.customers.email is no longer fed"),
            "{changes:?}"
        );
        assert!(changes[0].contains("green column email was renamed"), "{changes:?}");
    }

    #[test]
    fn retypes_recreation_and_new_feeds_are_each_named() {
        let old = sig();
        let mut new = sig();
        new.green_oid = 16500;
        new.columns.get_mut("email").unwrap().reads[0].1 = "varchar".into();
        new.columns.get_mut("id").unwrap().blue_type = "bigint".into();
        new.columns.insert(
            "city".into(),
            feed("expression loc ->> 'city'", &[("loc", "jsonb")], "text"),
        );
        let mut upper = sig();
        upper
            .columns
            .insert("label".into(), feed("expression upper(v)", &[("v", "text")], "text"));
        let mut renamed = upper.clone();
        renamed.columns.get_mut("label").unwrap().reads.clear();
        let gone = diff(&upper, &renamed).join("\n");
        assert!(
            gone.contains("green column public.customers.v, which expression upper(v) for blue column public.customers.label reads, is gone"),
            "{gone}"
        );
        let text = diff(&old, &new).join("\n");
        assert!(
            text.contains("dropped and created again (OID 16400 -> 16500)"),
            "{text}"
        );
        assert!(text.contains("changed type from text to varchar"), "{text}");
        assert!(
            text.contains("blue column public.customers.id changed type from integer to bigint"),
            "{text}"
        );
        assert!(
            text.contains("blue column public.customers.city is now fed from expression"),
            "{text}"
        );
    }

    #[test]
    fn partitions_and_row_filters_count_only_when_both_sides_come_from_the_catalog() {
        let old = Signature {
            catalog: Some(CatalogSide {
                row_filter: None,
                partitions: vec!["public.m_2024".into()],
                actions: vec!["insert".into(), "delete".into()],
                columns: [("price".to_string(), (3, "numeric(12,2)".to_string()))].into(),
                partition_storage: BTreeMap::new(),
                partition_of: None,
            }),
            ..sig()
        };
        let new = Signature {
            catalog: Some(CatalogSide {
                row_filter: Some("tenant = 1".into()),
                partitions: vec!["public.m_2025".into()],
                actions: vec!["insert".into()],
                columns: [("price".to_string(), (5, "numeric(12,2)".to_string()))].into(),
                partition_storage: BTreeMap::new(),
                partition_of: None,
            }),
            ..sig()
        };
        let text = diff(&old, &new).join("\n");
        assert!(text.contains("public.m_2025 were attached"), "{text}");
        assert!(text.contains("public.m_2024 were detached"), "{text}");
        assert!(text.contains("row filter"), "{text}");
        assert!(text.contains("no longer carries delete"), "{text}");
        assert!(
            text.contains("green column public.customers.price is another column now (position 3 -> 5)"),
            "{text}"
        );
        let zone = diff(&sig(), &sig().with_settings("TimeZone=Asia/Tokyo")).join("\n");
        assert!(
            zone.contains("other session settings now (TimeZone=Asia/Tokyo)"),
            "{zone}"
        );
        let from_relation = Signature { catalog: None, ..sig() };
        assert!(diff(&old, &from_relation).is_empty());
    }
}
