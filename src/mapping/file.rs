//! Mapping files (`<mapping dir>/*.toml`, one per blue table), parsed and checked on their own,
//! before any catalog is consulted. Errors name the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::split_table_name;
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Blue table, `schema.table` or `table` (public).
    target: Spanned<String>,
    /// Green table; defaults to the target's name.
    source: Option<Spanned<String>>,
    /// Green columns deliberately not carried.
    #[serde(default)]
    ignore: Vec<Spanned<String>>,
    /// Blue column name -> how it is fed.
    #[serde(default)]
    columns: BTreeMap<String, Spanned<RawColumn>>,
    /// Blue conflict-key column -> green replica-identity column.
    #[serde(default)]
    key: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    filter: Option<RawFilter>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    /// Green column whose value is copied (a rename).
    from: Option<String>,
    /// SQL expression over green's columns, evaluated on blue.
    expr: Option<String>,
    /// Not written: blue's default on insert, untouched on update.
    omit: Option<bool>,
    /// `"insert"`: only set when the row is inserted.
    on: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    /// SQL condition over green's columns; rows outside it are not carried.
    #[serde(rename = "where")]
    condition: Spanned<String>,
}

/// How one blue column is fed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feed {
    /// Copy the value of a green column.
    From(String),
    /// Evaluate a SQL expression over green's columns.
    Expr(String),
    /// Do not write it.
    Omit,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    pub feed: Feed,
    /// Only written when the row is inserted.
    pub insert_only: bool,
    /// Line in the mapping file, for messages.
    pub line: usize,
}

/// One parsed mapping file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingFile {
    pub path: PathBuf,
    /// (schema, table) on blue.
    pub target: (String, String),
    /// (schema, table) on green.
    pub source: (String, String),
    pub ignore: Vec<String>,
    /// Blue column -> feed, in file order of keys (sorted).
    pub columns: BTreeMap<String, ColumnSpec>,
    /// Blue key column -> green column; empty means blue's primary key, same names.
    pub key: BTreeMap<String, String>,
    pub filter: Option<String>,
}

impl MappingFile {
    /// `path:line` for messages about `line`.
    pub fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.path.display())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses one mapping file's text.
pub fn parse(path: &Path, text: &str) -> Result<MappingFile> {
    let raw: RawFile = toml::from_str(text).map_err(|e| crate::config::toml_error(path, text, &e))?;
    let at = |offset: usize| format!("{}:{}", path.display(), line_of(text, offset));
    let table = |key: &str, value: &Spanned<String>| {
        split_table_name(value.get_ref()).ok_or_else(|| {
            Error::definite(format!(
                "{}: {key} = {:?} is not a table name; write \"schema.table\" or \"table\"",
                at(value.span().start),
                value.get_ref()
            ))
        })
    };
    let target = table("target", &raw.target)?;
    let source = match &raw.source {
        Some(s) => table("source", s)?,
        None => target.clone(),
    };
    let mut columns = BTreeMap::new();
    for (name, spec) in &raw.columns {
        let line = line_of(text, spec.span().start);
        let where_ = format!("{}:{line}: columns.{name}", path.display());
        let c = spec.get_ref();
        let feed = match (&c.from, &c.expr, c.omit) {
            (Some(from), None, None | Some(false)) => Feed::From(from.clone()),
            (None, Some(expr), None | Some(false)) => {
                if expr.trim().is_empty() {
                    return Err(Error::definite(format!("{where_}: expr is empty")));
                }
                Feed::Expr(expr.clone())
            }
            (None, None, Some(true)) => Feed::Omit,
            (None, None, _) => {
                return Err(Error::definite(format!(
                    "{where_}: say how the column is fed: {{ from = \"green_column\" }}, {{ expr = \"sql\" }} or {{ omit = true }}"
                )))
            }
            _ => {
                return Err(Error::definite(format!(
                    "{where_}: use only one of from, expr and omit = true"
                )))
            }
        };
        let insert_only = match c.on.as_deref() {
            None => false,
            Some("insert") if feed != Feed::Omit => true,
            Some("insert") => {
                return Err(Error::definite(format!(
                    "{where_}: on = \"insert\" makes no sense with omit = true"
                )))
            }
            Some(other) => {
                return Err(Error::definite(format!(
                    "{where_}: on = {other:?} is not supported; the only value is \"insert\""
                )))
            }
        };
        columns.insert(
            name.clone(),
            ColumnSpec {
                feed,
                insert_only,
                line,
            },
        );
    }
    let filter = match raw.filter {
        Some(f) if f.condition.get_ref().trim().is_empty() => {
            return Err(Error::definite(format!(
                "{}: filter.where is empty",
                at(f.condition.span().start)
            )))
        }
        Some(f) => Some(f.condition.into_inner()),
        None => None,
    };
    Ok(MappingFile {
        path: path.to_path_buf(),
        target,
        source,
        ignore: raw.ignore.into_iter().map(Spanned::into_inner).collect(),
        columns,
        key: raw.key.into_iter().map(|(k, v)| (k, v.into_inner())).collect(),
        filter,
    })
}

/// Reads every `*.toml` below `dir` (sorted), refusing two files for the same blue or green
/// table. A missing directory holds no mappings.
pub fn load_dir(dir: &Path) -> Result<Vec<MappingFile>> {
    let mut paths = Vec::new();
    collect(dir, &mut paths)?;
    paths.sort();
    let mut files: Vec<MappingFile> = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::definite(format!("cannot read mapping {}: {e}", path.display())))?;
        let file = parse(&path, &text)?;
        if let Some(other) = files.iter().find(|f| f.target == file.target) {
            return Err(Error::definite(format!(
                "{} and {} both map blue table {}.{}; keep one",
                other.path.display(),
                file.path.display(),
                file.target.0,
                file.target.1
            )));
        }
        if let Some(other) = files.iter().find(|f| f.source == file.source) {
            return Err(Error::definite(format!(
                "{} and {} both read green table {}.{}; one green table feeds one blue table",
                other.path.display(),
                file.path.display(),
                file.source.0,
                file.source.1
            )));
        }
        files.push(file);
    }
    Ok(files)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::definite(format!(
                "cannot read mapping directory {}: {e}",
                dir.display()
            )))
        }
    };
    for entry in entries {
        let path = entry
            .map_err(|e| Error::definite(format!("{}: {e}", dir.display())))?
            .path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<MappingFile> {
        parse(Path::new("mappings/customers.toml"), text)
    }

    #[test]
    fn design_example_parses() {
        let m = parse_str(
            r#"
target = "public.customers"
source = "public.customers"
ignore = ["preferences"]

[columns]
email    = { from = "email_address" }
location = { expr = "location_structured ->> 'city'" }
legacy   = { omit = true }
origin   = { expr = "'bridge'", on = "insert" }

[key]
id = "id"

[filter]
where = "tenant_id = 42"
"#,
        )
        .unwrap();
        assert_eq!(m.target, ("public".into(), "customers".into()));
        assert_eq!(m.columns["email"].feed, Feed::From("email_address".into()));
        assert_eq!(m.columns["location"].line, 8);
        assert!(m.columns["origin"].insert_only);
        assert_eq!(m.columns["legacy"].feed, Feed::Omit);
        assert_eq!(m.key["id"], "id");
        assert_eq!(m.filter.as_deref(), Some("tenant_id = 42"));
        assert_eq!(m.ignore, vec!["preferences"]);
    }

    #[test]
    fn source_defaults_to_target() {
        let m = parse_str("target = \"orders\"").unwrap();
        assert_eq!(m.source, ("public".into(), "orders".into()));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "target = \"t\"\n[columns]\na = { from = \"x\", expr = \"y\" }\n",
                "customers.toml:3: columns.a",
                "only one",
            ),
            (
                "target = \"t\"\n[columns]\na = { }\n",
                "customers.toml:3: columns.a",
                "say how",
            ),
            (
                "target = \"t\"\n[columns]\na = { expr = \"1\", on = \"update\" }\n",
                "columns.a",
                "\"insert\"",
            ),
            (
                "target = \"t\"\n[columns]\na = { fromm = \"x\" }\n",
                "customers.toml:3",
                "fromm",
            ),
            ("target = \"a.b.c\"\n", "customers.toml:1: target", "not a table name"),
            ("source = \"t\"\n", "customers.toml", "target"),
            ("target = \"t\"\n[filter]\nwhere = \" \"\n", "customers.toml:3", "empty"),
        ];
        for (text, place, words) in cases {
            let msg = parse_str(text).unwrap_err().to_string();
            assert!(msg.contains(place) && msg.contains(words), "{text:?} gave {msg}");
        }
    }

    /// Every mapping shipped in the repository parses (the example is also streamed and
    /// checked against live catalogs in tests/mapping.rs).
    #[test]
    fn shipped_mappings_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let files = load_dir(&root).expect("shipped mappings parse");
        let targets: Vec<String> = files.iter().map(|f| format!("{}.{}", f.target.0, f.target.1)).collect();
        assert_eq!(targets, ["public.customers", "public.jobs", "public.orders"]);
    }

    #[test]
    fn duplicate_targets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "target = \"t\"\nsource = \"g1\"\n").unwrap();
        std::fs::write(dir.path().join("b.toml"), "target = \"public.t\"\nsource = \"g2\"\n").unwrap();
        let msg = load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("a.toml") && msg.contains("b.toml") && msg.contains("public.t"),
            "{msg}"
        );
        assert!(load_dir(&dir.path().join("missing")).unwrap().is_empty());
    }
}
