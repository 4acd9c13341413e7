//! Planning one green table onto one blue table, step by step: which blue columns are fed and
//! from what ([`columns`]), how blue finds the row an update or delete is about ([`key`]), and
//! which rows are carried at all ([`filter`]); then, under `strict`, that every green column is
//! used, and which green columns anything reads.
//!
//! Pure: green's Relation message and blue's catalog in, a [`TablePlan`] or a message naming
//! table, column and where to fix it out. The steps run in this order because each builds on
//! the one before (the key may add a target, the filter needs the key), and the first problem
//! found is the one reported.

mod columns;
mod filter;
mod key;

use std::sync::Arc;

use super::catalog::{BlueColumn, BlueTable};
use super::file::MappingFile;
use super::{GreenTable, KeyPlan, TablePlan, Target, Value};
use crate::error::{Error, Result};

/// Plans `green` onto `blue` through `file` (or by name without one). `strict` requires every
/// green column to be used or ignored.
pub fn plan(green: &GreenTable, blue: &BlueTable, file: Option<&MappingFile>, strict: bool) -> Result<Arc<TablePlan>> {
    let cx = Context::new(green, blue, file);
    let mut fed = columns::plan(&cx)?;
    let key = key::plan(&cx, &mut fed)?;
    let filter = filter::plan(&cx, &key, &mut fed.used)?;
    if strict {
        check_all_used(&cx, &fed.used)?;
    }
    let read = read_set(&cx, &fed.targets, &key, filter.as_deref());
    Ok(Arc::new(TablePlan {
        green: green.clone(),
        green_name: cx.green_name.into(),
        blue_name: cx.blue_name,
        blue_sql: crate::sql::qualified(&blue.schema, &blue.name),
        targets: fed.targets,
        key,
        filter,
        overriding_system_value: fed.overriding,
        blue_partitioned: blue.partitioned,
        file: file.map(|f| f.path.clone()),
        partition_of: None,
        read,
    }))
}

/// What every step plans against, and the names its messages use.
struct Context<'a> {
    green: &'a GreenTable,
    blue: &'a BlueTable,
    file: Option<&'a MappingFile>,
    /// `schema.table` on green.
    green_name: String,
    /// `schema.table` on blue.
    blue_name: String,
    /// Where to fix the mapping: the file, or "a mapping file for <blue table>".
    where_fix: String,
}

impl<'a> Context<'a> {
    fn new(green: &'a GreenTable, blue: &'a BlueTable, file: Option<&'a MappingFile>) -> Self {
        let blue_name = format!("{}.{}", blue.schema, blue.name);
        let where_fix = match file {
            Some(f) => f.path.display().to_string(),
            None => format!("a mapping file for {blue_name}"),
        };
        Context {
            green,
            blue,
            file,
            green_name: green.qualified(),
            blue_name,
            where_fix,
        }
    }

    /// `file:line: ` before a message about a line of the mapping file; nothing without one.
    fn at(&self, line: usize) -> String {
        match self.file {
            Some(f) => format!("{}: ", f.at(line)),
            None => String::new(),
        }
    }
}

/// The blue columns fed so far, and which green columns are used.
struct Fed {
    targets: Vec<Target>,
    /// Blue has a GENERATED ALWAYS identity column that we write.
    overriding: bool,
    /// Per green column: mapped, ignored, or read by a key or filter (for `strict`).
    used: Vec<bool>,
}

/// Target fed with `value` into blue column `b`.
fn target(b: &BlueColumn, value: Value, depends: Vec<usize>, insert_only: bool) -> Target {
    Target {
        blue_name: b.name.clone(),
        blue_type: b.type_sql.clone(),
        stored_type: b.stored_type.clone(),
        value,
        depends,
        insert_only,
        comparable: b.comparable,
        identity_always: b.identity_always,
    }
}

/// Under `strict`, every green column is used or ignored.
fn check_all_used(cx: &Context, used: &[bool]) -> Result<()> {
    let Some(i) = used.iter().position(|u| !u) else {
        return Ok(());
    };
    let (green_name, blue_name) = (&cx.green_name, &cx.blue_name);
    let col = &cx.green.columns[i].name;
    Err(Error::definite(match cx.file {
        Some(f) => format!(
            "green column {green_name}.{col} is not carried to blue: map it in [columns] or add it to ignore in {}",
            f.path.display()
        ),
        None => format!(
            "green column {green_name}.{col} has no column of that name in blue table {blue_name}: add it on blue, \
             map or ignore it in a mapping file, or set [mapping] strict = false"
        ),
    }))
}

/// Per green column: whether any blue column, the key or the filter reads it.
fn read_set(cx: &Context, targets: &[Target], key: &KeyPlan, filter: Option<&str>) -> Vec<bool> {
    let mut read = vec![false; cx.green.columns.len()];
    for t in targets {
        for &g in t.reads() {
            read[g] = true;
        }
    }
    for k in key.columns() {
        read[k.green] = true;
    }
    if let Some(condition) = filter {
        for g in super::expression::columns(condition, cx.green) {
            read[g] = true;
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::catalog::BlueColumn;
    use crate::mapping::file;
    use crate::mapping::{GreenColumn, KeyColumn};
    use crate::protocol::pgoutput::ReplicaIdentity;
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
    fn explicit_key_must_name_a_unique_key_of_blue() {
        let g = green(ReplicaIdentity::Default, &[("id", true), ("qty", false)]);
        let m = mapping("target = \"orders\"\n[key]\nqty = \"qty\"\n");
        let err = plan(&g, &blue(&["id", "qty"], Some(&["id"])), Some(&m), true).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("m/orders.toml: [key] names {\"qty\"} but blue table public.orders has no primary key")
                && msg.ends_with("usable keys: (id)"),
            "{msg}"
        );
    }

    #[test]
    fn a_key_column_is_a_plain_copy_written_on_update() {
        let g = green(ReplicaIdentity::Default, &[("id", true), ("qty", false)]);
        let blue = blue(&["id", "qty"], Some(&["id"]));
        let insert_only = mapping("target = \"orders\"\n[columns]\nid = { from = \"id\", on = \"insert\" }\n");
        let err = plan(&g, &blue, Some(&insert_only), true).unwrap_err();
        assert!(
            err.to_string().contains("blue key column id cannot be on = \"insert\""),
            "{err}"
        );
        let computed = mapping("target = \"orders\"\n[columns]\nid = { expr = \"id + 1\" }\n");
        let err = plan(&g, &blue, Some(&computed), true).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be fed by green column id (a plain copy)"),
            "{err}"
        );
    }

    #[test]
    fn a_key_column_nothing_feeds_is_added_from_key() {
        let g = green(ReplicaIdentity::Default, &[("order_id", true), ("qty", false)]);
        let m = mapping("target = \"orders\"\n[key]\nid = \"order_id\"\n");
        let p = plan(&g, &blue(&["id", "qty"], Some(&["id"])), Some(&m), true).unwrap();
        let added = p.targets.last().unwrap();
        assert_eq!((added.blue_name.as_str(), &added.value), ("id", &Value::Green(0)));
        assert_eq!(p.key, KeyPlan::Unique(vec![KeyColumn { target: 1, green: 0 }]));
        assert_eq!(p.read, vec![true, true]);
        assert!(!p.overriding_system_value);
        // An ALWAYS identity key fed from [key] alone is inserted with OVERRIDING SYSTEM VALUE,
        // as it is when [columns] or the same name feeds it.
        let mut b = blue(&["id", "qty"], Some(&["id"]));
        b.columns[0].identity_always = true;
        let p = plan(&g, &b, Some(&m), true).unwrap();
        assert!(p.overriding_system_value);
    }

    #[test]
    fn generated_blue_columns_are_refused_unless_omitted() {
        let g = green(ReplicaIdentity::Default, &[("id", true), ("total", false)]);
        let mut b = blue(&["id", "total"], Some(&["id"]));
        b.columns[1].generated = true;
        let m = mapping("target = \"orders\"\n[columns]\ntotal = { from = \"total\" }\n");
        let err = plan(&g, &b, Some(&m), true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("m/orders.toml:3: columns.total: blue column"),
            "{err}"
        );
        // By name, a generated blue column counts as used and is never written.
        let p = plan(&g, &b, None, true).unwrap();
        assert_eq!(p.targets.len(), 1);
    }

    #[test]
    fn filters_need_a_unique_key_and_mark_their_columns_read() {
        let g = green(ReplicaIdentity::Full, &[("id", false), ("tenant", false)]);
        let m = mapping("target = \"orders\"\n[filter]\nwhere = \"tenant = 42\"\n");
        let err = plan(&g, &blue(&["id", "tenant"], None), Some(&m), true).unwrap_err();
        assert!(err.to_string().contains("a filter needs a primary key"), "{err}");
        let ignore = mapping("target = \"orders\"\nignore = [\"tenant\"]\n[filter]\nwhere = \"tenant = 42\"\n");
        let p = plan(&g, &blue(&["id"], Some(&["id"])), Some(&ignore), true).unwrap();
        assert_eq!(p.filter.as_deref(), Some("tenant = 42"));
        assert_eq!(p.read, vec![true, true]);
    }

    #[test]
    fn unread_columns_stay_out_of_the_read_set() {
        let g = green(ReplicaIdentity::Default, &[("id", true), ("note", false)]);
        let p = plan(&g, &blue(&["id"], Some(&["id"])), None, false).unwrap();
        assert_eq!(p.read, vec![true, false]);
        assert!(!p.overriding_system_value);
    }
}
