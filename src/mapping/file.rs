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
    /// Blue table, `schema.table` or `table` (public); required, optional here so that its
    /// absence gets a message of our own.
    target: Option<Spanned<String>>,
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
    /// Left by `pgbridge draft` where it could not decide how the column is fed: what a
    /// person must decide. A file holding one does not load (see [`Decision`]).
    decide: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    /// SQL condition over green's columns; rows outside it are not carried.
    #[serde(rename = "where")]
    condition: Option<Spanned<String>>,
    /// Left by `pgbridge draft --reverse` for a filter only a person can invert.
    decide: Option<Spanned<String>>,
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
    /// Decisions `pgbridge draft` left to a person, in file order: while there is one, the
    /// file does not load ([`load_dir`] refuses it), so `check` fails and `run` and `setup`
    /// refuse to start.
    pub decisions: Vec<Decision>,
}

/// A `decide = "..."` marker `pgbridge draft` writes where it cannot decide on its own (a
/// blue-only column without a default, an expression to invert): never a silent guess.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `columns.<name>` or `filter`.
    pub key: String,
    /// What the person must decide, as draft wrote it.
    pub text: String,
    pub line: usize,
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
    let target = raw.target.as_ref().ok_or_else(|| {
        Error::definite(format!(
            "{}: target is missing; add target = \"schema.table\", the blue table this file fills",
            path.display()
        ))
    })?;
    let target = table("target", target)?;
    let source = match &raw.source {
        Some(s) => table("source", s)?,
        None => target.clone(),
    };
    let mut columns = BTreeMap::new();
    let mut decisions = Vec::new();
    for (name, spec) in &raw.columns {
        match &spec.get_ref().decide {
            Some(why) => decisions.push(Decision {
                key: format!("columns.{name}"),
                text: why.clone(),
                line: line_of(text, spec.span().start),
            }),
            None => {
                columns.insert(name.clone(), column_spec(path, text, name, spec)?);
            }
        }
    }
    let filter = match raw.filter {
        Some(RawFilter { decide: Some(why), .. }) => {
            decisions.push(Decision {
                key: "filter".into(),
                text: why.get_ref().clone(),
                line: line_of(text, why.span().start),
            });
            None
        }
        Some(RawFilter { condition: None, .. }) => {
            return Err(Error::definite(format!(
                "{}: [filter] needs where = \"condition over green's columns\"",
                path.display()
            )))
        }
        Some(RawFilter { condition: Some(c), .. }) if c.get_ref().trim().is_empty() => {
            return Err(Error::definite(format!(
                "{}: filter.where is empty",
                at(c.span().start)
            )))
        }
        Some(RawFilter { condition: Some(c), .. }) => Some(c.into_inner()),
        None => None,
    };
    decisions.sort_by_key(|d| d.line);
    Ok(MappingFile {
        path: path.to_path_buf(),
        target,
        source,
        ignore: raw.ignore.into_iter().map(Spanned::into_inner).collect(),
        columns,
        key: raw.key.into_iter().map(|(k, v)| (k, v.into_inner())).collect(),
        filter,
        decisions,
    })
}

/// `[columns] name = { ... }`: exactly one of `from`, `expr` and `omit = true`, and `on`.
fn column_spec(path: &Path, text: &str, name: &str, spec: &Spanned<RawColumn>) -> Result<ColumnSpec> {
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
    Ok(ColumnSpec {
        feed,
        insert_only,
        line,
    })
}

/// Reads every `*.toml` below `dir` (sorted), refusing two files for the same blue or green
/// table, and files that still hold a decision `pgbridge draft` left (all of them named, so
/// one `check` lists every decision). A missing directory holds no mappings.
pub fn load_dir(dir: &Path) -> Result<Vec<MappingFile>> {
    let files = read_dir(dir)?;
    let left: Vec<String> = files
        .iter()
        .flat_map(|f| {
            f.decisions.iter().map(move |d| {
                let fix = if d.key == "filter" {
                    "replace it with where = \"...\" or remove [filter]"
                } else {
                    "replace it with from, expr or omit = true"
                };
                format!(
                    "decision left by pgbridge draft: {}: {}: {}; {fix}",
                    f.at(d.line),
                    d.key,
                    d.text
                )
            })
        })
        .collect();
    if left.is_empty() {
        Ok(files)
    } else {
        Err(Error::definite(left.join("\n  - ")))
    }
}

/// [`load_dir`] without refusing decisions: what `pgbridge draft` reads to avoid writing a
/// second file for a table.
pub fn read_dir(dir: &Path) -> Result<Vec<MappingFile>> {
    let mut paths = Vec::new();
    collect(dir, &mut paths)?;
    paths.sort();
    let mut files: Vec<MappingFile> = Vec::new();
    // Which file maps each blue table and reads each green table so far.
    let mut targets = std::collections::HashMap::new();
    let mut sources = std::collections::HashMap::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => {
                Error::definite(format!("{}: not UTF-8 text; save the file as UTF-8", path.display()))
            }
            _ => Error::definite(format!("cannot read mapping {}: {e}", path.display())),
        })?;
        let file = parse(&path, &text)?;
        if let Some(other) = targets.get(&file.target).map(|&i: &usize| &files[i]) {
            return Err(Error::definite(format!(
                "{} and {} both map blue table {}.{}; keep one",
                other.path.display(),
                file.path.display(),
                file.target.0,
                file.target.1
            )));
        }
        if let Some(other) = sources.get(&file.source).map(|&i: &usize| &files[i]) {
            return Err(Error::definite(format!(
                "{} and {} both read green table {}.{}; one green table feeds one blue table",
                other.path.display(),
                file.path.display(),
                file.source.0,
                file.source.1
            )));
        }
        targets.insert(file.target.clone(), files.len());
        sources.insert(file.source.clone(), files.len());
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
                "cannot read mapping directory {}: {e}; point [mapping] dir at a directory of mapping files",
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
    fn decisions_left_by_draft_are_refused_by_name() {
        let text = "target = \"t\"\n[columns]\na = { from = \"x\" }\nloc = { decide = \"blue-only column without a default\" }\n\
                    [filter]\ndecide = \"invert tenant_id = 42\"\n";
        let m = parse_str(text).unwrap();
        assert_eq!(m.decisions.len(), 2);
        assert_eq!(m.decisions[0].key, "columns.loc");
        assert_eq!(m.decisions[0].line, 4);
        assert!(!m.columns.contains_key("loc") && m.filter.is_none());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.toml"), text).unwrap();
        let msg = load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("decision left by pgbridge draft")
                && msg.contains("t.toml:4: columns.loc: blue-only column without a default")
                && msg.contains("replace it with from, expr or omit = true")
                && msg.contains("t.toml:6: filter: invert tenant_id = 42"),
            "{msg}"
        );
        assert_eq!(read_dir(dir.path()).unwrap()[0].decisions.len(), 2);
        let msg = parse_str("target = \"t\"\n[filter]\n").unwrap_err().to_string();
        assert!(msg.contains("needs where"), "{msg}");
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

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::config::mutate;

    const FILE: &str = "mappings/customers.toml";

    /// Valid mapping files: every feature, and the smallest.
    const VALID: [&str; 3] = [
        r#"target = "public.customers"
source = "public.customers"
ignore = ["preferences"]

[columns]
email    = { from = "email_address" }
location = { expr = "location_structured ->> 'city'" }
legacy   = { omit = true }
origin   = { expr = "'bridge'", on = "insert" }
"Odd \"Name\";" = { from = "odd" }

[key]
id = "id"

[filter]
where = "tenant_id = 42"
"#,
        "target = 'orders'\n",
        "target = '\"Sales\".\"Orders\"'\nsource = \"sales.purchases\"\n\
         [columns]\ntotal = { expr = '''\namount\n  * 100''' }\n",
    ];

    /// An error names the file and is one line.
    fn check_error(err: &Error, file: &str) -> std::result::Result<(), TestCaseError> {
        let msg = err.to_string();
        prop_assert!(!msg.trim().is_empty());
        prop_assert!(msg.contains(file), "the error does not name {}: {}", file, msg);
        prop_assert!(!msg.contains('\n'), "the error spans several lines: {}", msg);
        Ok(())
    }

    /// A file that parsed describes a table: names are never empty, lines are in the file.
    fn check_file(m: &MappingFile, text: &str) -> std::result::Result<(), TestCaseError> {
        for (schema, table) in [&m.target, &m.source] {
            prop_assert!(!schema.is_empty() && !table.is_empty());
        }
        let lines = text.split('\n').count();
        for spec in m.columns.values() {
            prop_assert!(spec.line >= 1 && spec.line <= lines, "line {} of {}", spec.line, lines);
        }
        Ok(())
    }

    #[test]
    fn valid_texts_parse() {
        for text in VALID {
            let m = parse(Path::new(FILE), text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert!(!m.target.1.is_empty(), "{text}");
        }
        let m = parse(Path::new(FILE), VALID[0]).unwrap();
        assert_eq!(m.columns["Odd \"Name\";"].feed, Feed::From("odd".into()));
        let m = parse(Path::new(FILE), VALID[2]).unwrap();
        assert_eq!(m.target, ("Sales".into(), "Orders".into()));
        assert_eq!(m.columns["total"].feed, Feed::Expr("amount\n  * 100".into()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_is_refused_cleanly(text in any::<String>()) {
            match parse(Path::new(FILE), &text) {
                Ok(m) => check_file(&m, &text)?,
                Err(e) => check_error(&e, FILE)?,
            }
        }

        #[test]
        fn arbitrary_text_around_a_valid_mapping_is_refused_cleanly(
            base in 0..VALID.len(),
            before in ".{0,16}",
            after in ".{0,16}",
        ) {
            let text = format!("{before}{}{after}", VALID[base]);
            match parse(Path::new(FILE), &text) {
                Ok(m) => check_file(&m, &text)?,
                Err(e) => check_error(&e, FILE)?,
            }
        }

        #[test]
        fn mutated_mappings_are_refused_cleanly(
            base in 0..VALID.len(),
            edits in prop::collection::vec(mutate::edit(), 1..4),
        ) {
            let text = mutate::apply(VALID[base], &edits);
            match parse(Path::new(FILE), &text) {
                Ok(m) => check_file(&m, &text)?,
                Err(e) => check_error(&e, FILE)?,
            }
        }

        /// Through `load_dir`, as `setup`, `check` and `run` read them: any bytes, several files.
        #[test]
        fn arbitrary_files_in_the_directory_are_refused_cleanly(
            files in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..256), 1..4),
            valid in prop::option::of(0..VALID.len()),
        ) {
            let dir = tempfile::tempdir().unwrap();
            for (i, bytes) in files.iter().enumerate() {
                std::fs::write(dir.path().join(format!("{i}.toml")), bytes).unwrap();
            }
            if let Some(v) = valid {
                std::fs::write(dir.path().join("valid.toml"), VALID[v]).unwrap();
            }
            match load_dir(dir.path()) {
                Ok(found) => prop_assert!(found.len() <= files.len() + 1),
                Err(e) => check_error(&e, &dir.path().display().to_string())?,
            }
        }
    }
}
