//! How a green table's rows become a blue table's rows.
//!
//! A [`TablePlan`] is resolved from green's Relation message and blue's live catalog. Planning
//! is pure: it validates that the shapes fit (every green column lands somewhere, blue's key can
//! be computed from what green sends for updates and deletes) and says exactly what does not,
//! naming table and column. Statement text is generated from the plan in [`statements`].
//!
//! A table maps through its mapping file (see [`file`]) or, with `implicit = true`, by name: the
//! same schema-qualified table, same-named columns. Blue columns that nothing feeds keep blue's
//! default on insert and are left alone on update. Expressions are SQL evaluated on blue with
//! green's columns in scope, typed as green declares them.

pub mod catalog;
pub mod file;
pub mod green_catalog;
pub mod resolve;
pub mod signature;
pub mod statements;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::protocol::pgoutput::{Relation, ReplicaIdentity};
use catalog::BlueTable;
use file::{Feed, MappingFile};

/// A green column as its Relation message describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreenColumn {
    pub name: String,
    /// Green's type as a quoted, schema-qualified name without modifiers, as blue knows it.
    pub type_sql: String,
    /// Part of green's replica identity (every column under FULL).
    pub is_key: bool,
}

/// A green table: its Relation message with resolved type names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreenTable {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<GreenColumn>,
    /// What green's catalog says beyond the Relation message; `None` for a table described
    /// by a Relation message.
    pub facts: Option<Arc<green_catalog::CatalogFacts>>,
}

impl GreenTable {
    /// From a Relation message; `type_sql` resolves a type OID to its name on blue.
    pub fn from_relation(relation: &Relation, mut type_sql: impl FnMut(u32) -> Option<String>) -> Result<Self> {
        let full = relation.replica_identity == ReplicaIdentity::Full;
        let columns = relation
            .columns
            .iter()
            .map(|c| {
                let t = type_sql(c.type_oid).ok_or_else(|| {
                    Error::definite(format!(
                        "green column {}.{}.{} has type OID {} that blue does not know; create the type on blue",
                        relation.namespace, relation.name, c.name, c.type_oid
                    ))
                })?;
                Ok(GreenColumn {
                    name: c.name.clone(),
                    type_sql: t,
                    is_key: full || c.is_key(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GreenTable {
            oid: relation.oid,
            namespace: relation.namespace.clone(),
            name: relation.name.clone(),
            replica_identity: relation.replica_identity,
            columns,
            facts: None,
        })
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// What a blue column receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// The value of green column `i`.
    Green(usize),
    /// A SQL expression over green's columns.
    Expr(String),
}

/// A blue column pgbridge writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub blue_name: String,
    /// Blue's type, quoted and schema-qualified, for comparing with green's old values.
    pub blue_type: String,
    /// Blue's type with the column's modifier (`numeric(12,2)`): `CAST(value AS stored_type)`
    /// is what assigning `value` to the column stores (see `catalog::BlueColumn`).
    pub stored_type: String,
    pub value: Value,
    /// Green columns the value reads (for unchanged TOAST values).
    pub depends: Vec<usize>,
    /// Only written when the row is inserted.
    pub insert_only: bool,
    /// Whether blue's type has an equality operator (json, point, ... do not).
    pub comparable: bool,
    /// A GENERATED ALWAYS identity column: written on insert (OVERRIDING SYSTEM VALUE), never
    /// by UPDATE, which PostgreSQL refuses.
    pub identity_always: bool,
}

/// A blue key column and the green column its value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyColumn {
    /// Index into [`TablePlan::targets`].
    pub target: usize,
    /// Index into green's columns.
    pub green: usize,
}

/// How blue finds the row a green update or delete is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPlan {
    /// Blue has a primary key (or a unique index on NOT NULL columns): upsert and delete by it.
    Unique(Vec<KeyColumn>),
    /// No unique key on blue: the first row whose listed columns equal the old values (all
    /// green-fed columns under REPLICA IDENTITY FULL).
    Match(Vec<KeyColumn>),
}

impl KeyPlan {
    pub fn columns(&self) -> &[KeyColumn] {
        match self {
            KeyPlan::Unique(k) | KeyPlan::Match(k) => k,
        }
    }
}

/// Everything needed to write one green table's changes to blue.
#[derive(Clone, Debug)]
pub struct TablePlan {
    pub green: GreenTable,
    /// `schema.table` on green, for messages.
    pub green_name: Arc<str>,
    /// `schema.table` on blue, for messages.
    pub blue_name: String,
    /// `"schema"."table"` on blue, for SQL.
    pub blue_sql: String,
    pub targets: Vec<Target>,
    pub key: KeyPlan,
    /// Rows outside this condition (over green's columns) are not carried.
    pub filter: Option<String>,
    /// Blue has a GENERATED ALWAYS identity column that we write.
    pub overriding_system_value: bool,
    /// The blue table is partitioned.
    pub blue_partitioned: bool,
    /// The mapping file, or `None` for an implicit by-name mapping.
    pub file: Option<std::path::PathBuf>,
    /// A green partition mapped through its partitioned table's mapping (publication without
    /// publish_via_partition_root): that table, qualified. Blue cannot tell which of its rows
    /// came from this partition, so a TRUNCATE of it cannot be carried.
    pub partition_of: Option<String>,
    /// Per green column: whether any blue column, the key or the filter reads it. Columns
    /// nobody reads enter statements as text, so their type need not exist on blue.
    pub read: Vec<bool>,
}

impl TablePlan {
    pub fn green_columns(&self) -> usize {
        self.green.columns.len()
    }

    /// The key as `blue column <- green column`, in key order.
    pub fn key_pairs(&self) -> Vec<String> {
        self.key
            .columns()
            .iter()
            .map(|k| {
                format!(
                    "{} <- {}",
                    self.targets[k.target].blue_name, self.green.columns[k.green].name
                )
            })
            .collect()
    }

    /// Where to fix a problem with this table's mapping, for messages.
    pub fn source_of_truth(&self) -> String {
        match &self.file {
            Some(f) => f.display().to_string(),
            None => format!("a mapping file for {}", self.blue_name),
        }
    }
}

/// Green column names an expression reads: its identifiers (outside string literals) that name
/// a green column. Over-approximates (a function named like a column counts), which only makes
/// the unchanged-TOAST handling more careful.
pub fn expression_columns(expr: &str, green: &GreenTable) -> Vec<usize> {
    let mut found = Vec::new();
    let mut add = |word: &str| {
        if let Some(i) = green.position(word) {
            if !found.contains(&i) {
                found.push(i);
            }
        }
    };
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut after_cast = false;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\'' || ((c == 'E' || c == 'e') && next == Some('\'') && !word_char(chars.get(i.wrapping_sub(1)))) {
            // 'literal' with '' inside, or E'literal' with backslash escapes.
            let escapes = c != '\'';
            i += if escapes { 2 } else { 1 };
            while i < chars.len() {
                match chars[i] {
                    '\\' if escapes => i += 2,
                    '\'' if chars.get(i + 1) == Some(&'\'') => i += 2,
                    '\'' => break,
                    _ => i += 1,
                }
            }
            i += 1;
            after_cast = false;
        } else if c == '$' && !word_char(chars.get(i.wrapping_sub(1))) {
            // $tag$ ... $tag$ (a bare $1 is a parameter, not a quote).
            let tag_end = chars[i + 1..].iter().position(|&ch| ch == '$').map(|p| i + 1 + p);
            match tag_end {
                Some(end)
                    if chars[i + 1..end].iter().all(|&ch| ch.is_alphanumeric() || ch == '_')
                        && !chars.get(i + 1).is_some_and(|ch| ch.is_ascii_digit()) =>
                {
                    let tag: String = chars[i..=end].iter().collect();
                    let body: String = chars[end + 1..].iter().collect();
                    i = match body.find(&tag) {
                        Some(p) => end + 1 + body[..p].chars().count() + tag.chars().count(),
                        None => chars.len(),
                    };
                }
                _ => i += 1,
            }
            after_cast = false;
        } else if c == ':' && next == Some(':') {
            // What follows :: is a type name, not a column.
            after_cast = true;
            i += 2;
        } else if c == '"' {
            let mut word = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == '"' && chars.get(i + 1) == Some(&'"') {
                    word.push('"');
                    i += 2;
                } else if chars[i] == '"' {
                    break;
                } else {
                    word.push(chars[i]);
                    i += 1;
                }
            }
            i += 1;
            if !after_cast {
                add(&word);
            }
            after_cast = false;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && word_char(chars.get(i)) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect::<String>().to_lowercase();
            // A qualified type name after :: (pg_catalog.text) is skipped whole.
            let qualified = chars.get(i) == Some(&'.');
            if !after_cast {
                add(&word);
            }
            after_cast = after_cast && qualified;
            if qualified && after_cast {
                i += 1;
            }
        } else {
            if !c.is_whitespace() {
                after_cast = false;
            }
            i += 1;
        }
    }
    found
}

fn word_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
}

/// Plans `green` onto `blue` through `file` (or by name without one). `strict` requires every
/// green column to be used or ignored.
pub fn plan(green: &GreenTable, blue: &BlueTable, file: Option<&MappingFile>, strict: bool) -> Result<Arc<TablePlan>> {
    let green_name = green.qualified();
    let blue_name = format!("{}.{}", blue.schema, blue.name);
    let where_fix = match file {
        Some(f) => f.path.display().to_string(),
        None => format!("a mapping file for {blue_name}"),
    };
    let at = |line: usize| match file {
        Some(f) => format!("{}: ", f.at(line)),
        None => String::new(),
    };
    let mut targets: Vec<Target> = Vec::new();
    let mut overriding = false;
    let mut used = vec![false; green.columns.len()];
    let empty = Default::default();
    let specs = file.map_or(&empty, |f| &f.columns);

    // Explicitly mapped blue columns.
    for (name, spec) in specs {
        let Some(b) = blue.column(name) else {
            return Err(Error::definite(format!(
                "{}columns.{name}: blue table {blue_name} has no column {name}",
                at(spec.line)
            )));
        };
        if b.generated && spec.feed != Feed::Omit {
            return Err(Error::definite(format!(
                "{}columns.{name}: blue column {blue_name}.{name} is generated and cannot be written; use {{ omit = true }} or remove it",
                at(spec.line)
            )));
        }
        let (value, depends) = match &spec.feed {
            Feed::Omit => continue,
            Feed::From(col) => {
                let i = green.position(col).ok_or_else(|| {
                    let unpublished = green
                        .facts
                        .as_ref()
                        .and_then(|f| f.unpublished.iter().find(|(c, _)| &c.name == col))
                        .map(|(_, why)| match why {
                            green_catalog::Unpublished::Generated => {
                                " that the stream carries: it is a generated column, which logical replication does not \
                                 publish; compute it with expr over published columns"
                            }
                            green_catalog::Unpublished::ColumnList => {
                                " that the stream carries: the publication's column list leaves it out; add it to the \
                                 column list or map another column"
                            }
                        });
                    Error::definite(format!(
                        "{}columns.{name}: green table {green_name} has no column {col}{}",
                        at(spec.line),
                        unpublished.unwrap_or("")
                    ))
                })?;
                (Value::Green(i), vec![i])
            }
            Feed::Expr(sql) => (Value::Expr(sql.clone()), expression_columns(sql, green)),
        };
        for &d in &depends {
            used[d] = true;
        }
        overriding |= b.identity_always;
        targets.push(Target {
            blue_name: b.name.clone(),
            blue_type: b.type_sql.clone(),
            stored_type: b.stored_type.clone(),
            value,
            depends,
            insert_only: spec.insert_only,
            comparable: b.comparable,
            identity_always: b.identity_always,
        });
    }
    // Same-named columns map implicitly.
    let ignored = |n: &str| file.is_some_and(|f| f.ignore.iter().any(|i| i == n));
    for (i, col) in green.columns.iter().enumerate() {
        if ignored(&col.name) {
            used[i] = true;
            continue;
        }
        if specs.contains_key(&col.name) {
            continue;
        }
        match blue.column(&col.name) {
            Some(b) if b.generated => used[i] = true,
            Some(b) => {
                used[i] = true;
                overriding |= b.identity_always;
                targets.push(Target {
                    blue_name: b.name.clone(),
                    blue_type: b.type_sql.clone(),
                    stored_type: b.stored_type.clone(),
                    value: Value::Green(i),
                    depends: vec![i],
                    insert_only: false,
                    comparable: b.comparable,
                    identity_always: b.identity_always,
                });
            }
            None => {}
        }
    }
    let full = green.replica_identity == ReplicaIdentity::Full;
    let explicit_key = file.map(|f| &f.key).filter(|k| !k.is_empty());
    // [key] names the blue conflict key: the unique key with exactly those columns.
    let chosen_key =
        match explicit_key {
            Some(k) => {
                let wanted: std::collections::BTreeSet<&String> = k.keys().collect();
                let found = blue
                    .unique_keys
                    .iter()
                    .find(|u| u.iter().collect::<std::collections::BTreeSet<_>>() == wanted);
                match found {
                    Some(u) => Some(u),
                    None => {
                        let available: Vec<String> =
                            blue.unique_keys.iter().map(|u| format!("({})", u.join(", "))).collect();
                        return Err(Error::definite(format!(
                        "{where_fix}: [key] names {:?} but blue table {blue_name} has no primary key or unique index \
                         (on NOT NULL columns, not deferrable, not partial) on exactly those columns; usable keys: {}",
                        wanted,
                        if available.is_empty() { "none".to_string() } else { available.join(", ") }
                    )));
                    }
                }
            }
            None => blue.key.as_ref(),
        };
    let key = match (chosen_key, explicit_key) {
        (None, Some(_)) => unreachable!("an explicit [key] either matched a blue key or returned"),
        (Some(blue_key), explicit) => {
            let mut cols = Vec::new();
            for bk in blue_key {
                let green_col = match explicit {
                    Some(k) => k.get(bk).cloned().ok_or_else(|| {
                        Error::definite(format!(
                            "{where_fix}: [key] must give every column of blue's key ({}); {bk} is missing",
                            blue_key.join(", ")
                        ))
                    })?,
                    None => match targets.iter().find(|t| &t.blue_name == bk).map(|t| &t.value) {
                        Some(Value::Green(i)) => green.columns[*i].name.clone(),
                        _ => bk.clone(),
                    },
                };
                let g = green.position(&green_col).ok_or_else(|| {
                    Error::definite(format!(
                        "blue key column {blue_name}.{bk} needs green column {green_col}, which {green_name} does not have; \
                         add it to [key] in {where_fix}"
                    ))
                })?;
                if !green.columns[g].is_key {
                    return Err(Error::definite(format!(
                        "blue key column {blue_name}.{bk} comes from green column {green_name}.{green_col}, which is not \
                         part of green's replica identity, so updates and deletes would not say which row they change; \
                         run on green: ALTER TABLE {} REPLICA IDENTITY FULL (or key blue on green's key)",
                        crate::sql::qualified(&green.namespace, &green.name)
                    )));
                }
                let t = match targets.iter().position(|t| &t.blue_name == bk) {
                    Some(t) if targets[t].insert_only => {
                        return Err(Error::definite(format!(
                        "{where_fix}: blue key column {bk} cannot be on = \"insert\": a key change must move the row"
                    )))
                    }
                    Some(t) if targets[t].value == Value::Green(g) => t,
                    Some(_) => {
                        return Err(Error::definite(format!(
                            "{where_fix}: blue key column {bk} must be fed by green column {green_col} (a plain copy), \
                             not another column or an expression"
                        )))
                    }
                    None => {
                        used[g] = true;
                        let b = blue.column(bk);
                        targets.push(Target {
                            blue_name: bk.clone(),
                            blue_type: b.map_or_else(|| green.columns[g].type_sql.clone(), |c| c.type_sql.clone()),
                            stored_type: b.map_or_else(|| green.columns[g].type_sql.clone(), |c| c.stored_type.clone()),
                            value: Value::Green(g),
                            depends: vec![g],
                            insert_only: false,
                            comparable: true,
                            identity_always: b.is_some_and(|c| c.identity_always),
                        });
                        targets.len() - 1
                    }
                };
                cols.push(KeyColumn { target: t, green: g });
            }
            KeyPlan::Unique(cols)
        }
        (None, None) => {
            // Match on plain copies that blue keeps in step with green: not insert-only ones,
            // not identity columns blue generates.
            let cols: Vec<KeyColumn> = targets
                .iter()
                .enumerate()
                .filter(|(_, target)| !target.insert_only && !target.identity_always)
                .filter_map(|(t, target)| match target.value {
                    Value::Green(g) if green.columns[g].is_key => Some(KeyColumn { target: t, green: g }),
                    _ => None,
                })
                .collect();
            if cols.is_empty() {
                return Err(Error::definite(format!(
                    "blue table {blue_name} has no primary key and green table {green_name} has no replica identity \
                     that reaches blue, so updates and deletes cannot be matched; add a primary key on blue, or run \
                     on green: ALTER TABLE {} REPLICA IDENTITY FULL",
                    crate::sql::qualified(&green.namespace, &green.name)
                )));
            }
            KeyPlan::Match(cols)
        }
    };

    let filter = file.and_then(|f| f.filter.clone());
    if filter.is_some() && matches!(key, KeyPlan::Match(_)) {
        return Err(Error::definite(format!(
            "{where_fix}: a filter needs a primary key or unique index on blue table {blue_name}: without one, a row \
             entering the filter cannot be told from a row already there"
        )));
    }
    if let Some(condition) = &filter {
        for g in expression_columns(condition, green) {
            used[g] = true;
            if !full && !green.columns[g].is_key {
                return Err(Error::definite(format!(
                    "{where_fix}: filter.where reads green column {}, which is not part of green's replica identity; \
                     filter on key columns or set REPLICA IDENTITY FULL on green",
                    green.columns[g].name
                )));
            }
        }
    }
    if strict {
        if let Some(i) = used.iter().position(|u| !u) {
            let col = &green.columns[i].name;
            return Err(Error::definite(match file {
                Some(f) => format!(
                    "green column {green_name}.{col} is not carried to blue: map it in [columns] or add it to ignore in {}",
                    f.path.display()
                ),
                None => format!(
                    "green column {green_name}.{col} has no column of that name in blue table {blue_name}: add it on blue, \
                     map or ignore it in a mapping file, or set [mapping] strict = false"
                ),
            }));
        }
    }
    let mut read = vec![false; green.columns.len()];
    for t in &targets {
        for &g in &t.depends {
            read[g] = true;
        }
    }
    for k in key.columns() {
        read[k.green] = true;
    }
    if let Some(condition) = &filter {
        for g in expression_columns(condition, green) {
            read[g] = true;
        }
    }
    Ok(Arc::new(TablePlan {
        green: green.clone(),
        green_name: green_name.into(),
        blue_name,
        blue_sql: crate::sql::qualified(&blue.schema, &blue.name),
        targets,
        key,
        filter,
        overriding_system_value: overriding,
        blue_partitioned: blue.partitioned,
        file: file.map(|f| f.path.clone()),
        partition_of: None,
        read,
    }))
}

#[cfg(test)]
mod tests {
    use super::catalog::BlueColumn;
    use super::*;
    use std::path::Path;

    fn green(identity: ReplicaIdentity, cols: &[(&str, bool)]) -> GreenTable {
        GreenTable {
            oid: 16384,
            namespace: "public".into(),
            name: "orders".into(),
            replica_identity: identity,
            columns: cols
                .iter()
                .map(|(n, key)| GreenColumn {
                    name: n.to_string(),
                    type_sql: "\"pg_catalog\".\"int4\"".into(),
                    is_key: *key || identity == ReplicaIdentity::Full,
                })
                .collect(),
            facts: None,
        }
    }

    fn blue(cols: &[&str], key: Option<&[&str]>) -> BlueTable {
        BlueTable {
            oid: 1,
            schema: "public".into(),
            name: "orders".into(),
            columns: cols
                .iter()
                .map(|n| BlueColumn {
                    name: n.to_string(),
                    type_sql: "\"pg_catalog\".\"int4\"".into(),
                    declared: "integer".into(),
                    attnum: 1,
                    stored_type: "\"pg_catalog\".\"int4\"".into(),
                    not_null: false,
                    has_default: false,
                    identity_always: false,
                    generated: false,
                    comparable: true,
                })
                .collect(),
            key: key.map(|k| k.iter().map(|s| s.to_string()).collect()),
            unique_keys: key
                .map(|k| vec![k.iter().map(|s| s.to_string()).collect()])
                .unwrap_or_default(),
            partitioned: false,
        }
    }

    fn mapping(text: &str) -> MappingFile {
        file::parse(Path::new("m/orders.toml"), text).unwrap()
    }

    #[test]
    fn same_shape_maps_by_name_and_key() {
        let plan = plan(
            &green(ReplicaIdentity::Default, &[("id", true), ("qty", false)]),
            &blue(&["qty", "id", "note"], Some(&["id"])),
            None,
            true,
        )
        .unwrap();
        assert_eq!(plan.targets.len(), 2);
        assert_eq!(plan.key, KeyPlan::Unique(vec![KeyColumn { target: 0, green: 0 }]));
        assert_eq!(plan.blue_sql, "\"public\".\"orders\"");
    }

    #[test]
    fn missing_blue_column_is_named_under_strict() {
        let g = green(ReplicaIdentity::Default, &[("id", true), ("extra", false)]);
        let err = plan(&g, &blue(&["id"], Some(&["id"])), None, true).unwrap_err();
        assert!(err.to_string().contains("public.orders.extra"), "{err}");
        assert!(plan(&g, &blue(&["id"], Some(&["id"])), None, false).is_ok());
    }

    #[test]
    fn renames_expressions_and_ignores() {
        let g = green(
            ReplicaIdentity::Default,
            &[("id", true), ("email_address", false), ("loc", false), ("prefs", false)],
        );
        let m = mapping(
            "target = \"orders\"\nignore = [\"prefs\"]\n[columns]\nemail = { from = \"email_address\" }\n\
             city = { expr = \"loc ->> 'city'\" }\norigin = { expr = \"'bridge'\", on = \"insert\" }\n",
        );
        let p = plan(
            &g,
            &blue(&["id", "email", "city", "origin"], Some(&["id"])),
            Some(&m),
            true,
        )
        .unwrap();
        let by_name = |n: &str| p.targets.iter().find(|t| t.blue_name == n).unwrap();
        assert_eq!(by_name("email").value, Value::Green(1));
        assert_eq!(by_name("city").depends, vec![2]);
        assert!(by_name("origin").insert_only && by_name("origin").depends.is_empty());
        let unused = mapping("target = \"orders\"\n[columns]\nemail = { from = \"email_address\" }\n");
        let err = plan(&g, &blue(&["id", "email"], Some(&["id"])), Some(&unused), true).unwrap_err();
        assert!(
            err.to_string().contains("public.orders.loc") && err.to_string().contains("m/orders.toml"),
            "{err}"
        );
    }

    #[test]
    fn blue_key_outside_green_identity_needs_full() {
        let g = green(ReplicaIdentity::Default, &[("id", true), ("code", false)]);
        let err = plan(&g, &blue(&["id", "code"], Some(&["code"])), None, true).unwrap_err();
        assert!(err.to_string().contains("REPLICA IDENTITY FULL"), "{err}");
        let full = green(ReplicaIdentity::Full, &[("id", false), ("code", false)]);
        assert!(plan(&full, &blue(&["id", "code"], Some(&["code"])), None, true).is_ok());
    }

    #[test]
    fn keyless_tables_match_on_all_columns_under_full() {
        let p = plan(
            &green(ReplicaIdentity::Full, &[("a", false), ("b", false)]),
            &blue(&["a", "b"], None),
            None,
            true,
        )
        .unwrap();
        assert_eq!(p.key.columns().len(), 2);
        let err = plan(
            &green(ReplicaIdentity::Nothing, &[("a", false)]),
            &blue(&["a"], None),
            None,
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no primary key"), "{err}");
    }

    #[test]
    fn filters_must_read_identity_columns() {
        let g = green(ReplicaIdentity::Default, &[("id", true), ("tenant", false)]);
        let m = mapping("target = \"orders\"\n[filter]\nwhere = \"tenant = 42\"\n");
        let err = plan(&g, &blue(&["id", "tenant"], Some(&["id"])), Some(&m), true).unwrap_err();
        assert!(err.to_string().contains("replica identity"), "{err}");
    }

    #[test]
    fn expression_columns_skip_literals_and_match_quoted_names() {
        let g = green(
            ReplicaIdentity::Default,
            &[("a", true), ("b", false), ("Mixed", false), ("c", false)],
        );
        assert_eq!(
            expression_columns("a || 'b' || \"Mixed\" || upper(C)", &g),
            vec![0, 2, 3]
        );
        assert_eq!(expression_columns("'it''s b'", &g), Vec::<usize>::new());
        assert_eq!(expression_columns(r"E'\'' || b", &g), vec![1]);
        assert_eq!(expression_columns("$q$ a $q$ || $$b$$ || c", &g), vec![3]);
        assert_eq!(expression_columns("b::a || c::pg_catalog.a || $1", &g), vec![1, 3]);
    }
}
