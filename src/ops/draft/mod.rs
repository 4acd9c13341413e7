//! `pgbridge draft [--reverse] [--out DIR] [--force]`: mapping files written from both live
//! catalogs, for a person to review. Forward, the blue tables green's published tables feed;
//! with `--reverse`, the mappings for a bridge from blue back to green, inverted from the
//! existing forward mappings.
//!
//! Nothing is guessed silently: a guess (a renamed column or table) is a comment on a value
//! a person can check, a cast that can lose information says so, and what pgbridge cannot
//! decide is a `decide = "..."` marker that makes `check` fail (see [`crate::mapping::file`]).
//!
//! - [`catalog`]: what is read from each side; [`names`]: quoting and name likeness;
//! - [`casts`]: which conversions the target's server accepts;
//! - [`pairing`]: which green-only thing is a renamed blue-only thing;
//! - [`forward`], [`reverse`]: one table's draft; [`tables`]: every table's;
//! - [`model`]: a draft and its text.

pub mod casts;
pub mod catalog;
pub mod forward;
pub mod model;
pub mod names;
pub mod pairing;
pub mod reverse;
pub mod tables;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::mapping::{file, green_catalog};

pub use model::{Line, Tag};

/// What the command line asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// Draft the mappings of a bridge from blue back to green.
    pub reverse: bool,
    /// Where to write; `None`: `[mapping] dir` (forward only).
    pub out: Option<PathBuf>,
    /// Overwrite files draft would write that exist.
    pub force: bool,
}

/// One table's result.
#[derive(Clone, Debug)]
pub struct Written {
    pub path: PathBuf,
    /// `schema.table` the file fills, and the one it reads.
    pub target: String,
    pub source: String,
    pub lines: Vec<Line>,
    pub decisions: usize,
}

/// What draft did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub out: PathBuf,
    pub written: Vec<Written>,
    /// Tables that map by name: no file.
    pub same: Vec<String>,
    /// What no file settles; a person must.
    pub attention: Vec<String>,
    pub notes: Vec<String>,
}

impl Outcome {
    /// Decisions left to a person: markers in the files and tables no file settles.
    pub fn decisions(&self) -> usize {
        self.written.iter().map(|w| w.decisions).sum::<usize>() + self.attention.len()
    }
}

/// Reads both catalogs, drafts and writes the files.
pub async fn draft(config: &Config, options: &Options) -> Result<Outcome> {
    let out = match (&options.out, options.reverse) {
        (Some(dir), _) => dir.clone(),
        (None, false) => config.mapping_dir.clone(),
        (None, true) => {
            return Err(Error::definite(
                "draft --reverse needs --out DIR: the reverse mappings belong to another bridge's configuration, \
                 not in [mapping] dir next to the forward ones",
            ))
        }
    };
    let forward_files = if options.reverse {
        file::load_dir(&config.mapping_dir)
            .map_err(|e| Error::definite(format!("{e} (draft --reverse inverts these mappings)")))?
    } else {
        Vec::new()
    };
    let (green, blue) = crate::connect::both(config).await?;
    let exists = green_catalog::publication_exists(&green, &config.publication)
        .await
        .map_err(Error::into_definite)?;
    let published = green_catalog::tables(&green, config, exists)
        .await
        .map_err(Error::into_definite)?;
    let green_all = catalog::tables(&green, "green", "").await?;
    let blue_all = catalog::tables(&blue, "blue", &config.schema).await?;
    let green_enums = catalog::enums(&green, "green").await?;
    let blue_enums = catalog::enums(&blue, "blue").await?;
    let q = names::Quoter::new(catalog::keywords(&blue, "blue").await?);
    let (green_tables, unstreamed) = streamed(config, &published, &green_all);
    let ids: Vec<(String, String)> = published
        .iter()
        .map(|t| (t.namespace.clone(), t.name.clone()))
        .collect();
    // Drafted until every conversion a draft writes has been asked of its target's server
    // (the second pass asks no more than the first: see [`casts`]).
    let (target, target_side): (&tokio_postgres::Client, &str) = if options.reverse {
        (&green, "green")
    } else {
        (&blue, "blue")
    };
    let mut known = casts::Casts::default();
    let drafted = loop {
        let ctx = forward::Ctx::new(&q, &known, options.reverse, &green_enums, &blue_enums);
        let drafted = if options.reverse {
            tables::reverse(&ids, &green_all, &blue_all, &forward_files, &ctx)
        } else {
            tables::forward(&ctx, &green_tables, &unstreamed, &blue_all, config.implicit)
        };
        let asks = known.unanswered();
        if asks.is_empty() {
            break drafted;
        }
        known.ask(target, target_side, asks).await?;
    };
    let (written, notes) = write(&out, &drafted.drafts, options.force)?;
    Ok(Outcome {
        out,
        written,
        same: drafted.same,
        attention: drafted.attention,
        notes: notes.into_iter().chain(drafted.notes).collect(),
    })
}

/// Green's tables as the stream carries them (published columns only, the others noted as
/// withheld), and green's tables the stream does not carry.
fn streamed(
    config: &Config,
    published: &[crate::mapping::GreenTable],
    green_all: &std::collections::BTreeMap<(String, String), catalog::Table>,
) -> (Vec<catalog::Table>, BTreeSet<(String, String)>) {
    let tables = published
        .iter()
        .filter_map(|p| {
            let mut t = green_all.get(&(p.namespace.clone(), p.name.clone()))?.clone();
            t.columns.retain(|c| p.columns.iter().any(|pc| pc.name == c.name));
            if let Some(facts) = &p.facts {
                t.withheld = facts
                    .unpublished
                    .iter()
                    .map(|(c, why)| (c.name.clone(), why.describe(&config.publication)))
                    .collect();
            }
            Some(t)
        })
        .collect();
    let unstreamed = green_all
        .keys()
        .filter(|id| !published.iter().any(|p| p.namespace == id.0 && p.name == id.1))
        .cloned()
        .collect();
    (tables, unstreamed)
}

/// Writes every draft into `dir`, or nothing: a file that exists is overwritten only with
/// `force` and only when it maps the same table (a file of that name mapping another table is
/// kept, and the draft takes another name), and a file of another name that maps the same
/// table never (two files for one table would not load). Every file is written to a
/// temporary first and renamed into place once all are written, so a failure leaves the
/// directory as it was. Returns what was written and notes on names taken.
fn write(dir: &Path, drafts: &[model::TableDraft], force: bool) -> Result<(Vec<Written>, Vec<String>)> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::definite(format!(
            "{} is not a directory; pass --out a directory (it is created when missing)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::definite(format!(
            "cannot create {}: {e}; pass --out a directory you can write to",
            dir.display()
        ))
    })?;
    let existing = file::read_dir(dir)
        .map_err(|e| Error::definite(format!("cannot read the mappings already in {}: {e}", dir.display())))?;
    let present = entries(dir)?;
    let (paths, notes) = file_paths(dir, drafts, &existing, &present);
    let mut conflicts = Vec::new();
    for (d, path) in drafts.iter().zip(&paths) {
        if path.exists() && !force {
            conflicts.push(format!("{} exists (--force overwrites it)", path.display()));
        }
        for f in existing.iter().filter(|f| &f.path != path) {
            if f.target == d.target || f.source == d.source {
                conflicts.push(format!(
                    "{} already maps blue {} <- green {} (remove it to draft this table again)",
                    f.path.display(),
                    names::shown_table(&f.target.0, &f.target.1),
                    names::shown_table(&f.source.0, &f.source.1)
                ));
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(Error::definite(format!(
            "nothing written: {}; or pass --out another directory",
            conflicts.join("; ")
        )));
    }
    let texts: Vec<String> = drafts.iter().map(model::TableDraft::render).collect();
    replace_all(&paths, &texts)?;
    let written = drafts
        .iter()
        .zip(paths)
        .map(|(d, path)| Written {
            path,
            target: names::shown_table(&d.target.0, &d.target.1),
            source: names::shown_table(&d.source.0, &d.source.1),
            lines: d.lines.clone(),
            decisions: d.decisions(),
        })
        .collect();
    Ok((written, notes))
}

/// The names of the entries of `dir`.
fn entries(dir: &Path) -> Result<Vec<String>> {
    let list = std::fs::read_dir(dir).map_err(|e| Error::definite(format!("cannot read {}: {e}", dir.display())))?;
    Ok(list
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// Writes `texts` to `paths`: all to temporaries beside them, then each renamed into place;
/// on a failure the temporaries are removed.
fn replace_all(paths: &[PathBuf], texts: &[String]) -> Result<()> {
    let temporary = |path: &Path| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        path.with_file_name(format!(".{name}.pgbridge-draft-{}.tmp", std::process::id()))
    };
    let temps: Vec<PathBuf> = paths.iter().map(|p| temporary(p)).collect();
    let clean = |from: usize| {
        for t in &temps[from..] {
            let _ = std::fs::remove_file(t);
        }
    };
    for (temp, text) in temps.iter().zip(texts) {
        if let Err(e) = std::fs::write(temp, text) {
            clean(0);
            return Err(Error::definite(format!(
                "nothing written: cannot write {}: {e}; pass --out a directory you can write to",
                temp.display()
            )));
        }
    }
    for (i, (temp, path)) in temps.iter().zip(paths).enumerate() {
        if let Err(e) = std::fs::rename(temp, path) {
            clean(i);
            let done: Vec<String> = paths[..i].iter().map(|p| p.display().to_string()).collect();
            return Err(Error::definite(format!(
                "cannot replace {}: {e}; {}",
                path.display(),
                if done.is_empty() {
                    "nothing written".to_string()
                } else {
                    format!("already written: {}", done.join(", "))
                }
            )));
        }
    }
    Ok(())
}

/// A file per draft, named after its target; a name taken by another draft, or by a file in
/// `dir` that maps another table (or is not a mapping), gets a number. Names are compared
/// without case, as a case-insensitive file system would: `T.toml` and `t.toml` are one file
/// there. Also returns a note for each name moved aside because of a file of `dir`.
fn file_paths(
    dir: &Path,
    drafts: &[model::TableDraft],
    existing: &[file::MappingFile],
    present: &[String],
) -> (Vec<PathBuf>, Vec<String>) {
    let mut taken: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    let paths = drafts
        .iter()
        .map(|d| {
            let base = names::file_name(&d.target.0, &d.target.1);
            let stem = base.trim_end_matches(".toml").to_string();
            let mut name = base.clone();
            let mut n = 2;
            let mut moved: Option<String> = None;
            loop {
                let lower = name.to_lowercase();
                let by_draft = taken.contains(&lower);
                // A file there of this name, ignoring case, unless it is this very name
                // holding this table's mapping (which --force may replace).
                let by_file = present.iter().find(|p| p.to_lowercase() == lower).filter(|p| {
                    !(**p == name
                        && existing
                            .iter()
                            .any(|f| f.path == dir.join(p.as_str()) && f.target == d.target && f.source == d.source))
                });
                if !by_draft && by_file.is_none() {
                    break;
                }
                if let (Some(p), None) = (by_file, &moved) {
                    moved = Some(p.clone());
                }
                name = format!("{stem}-{n}.toml");
                n += 1;
            }
            if let Some(p) = moved {
                notes.push(format!(
                    "{} maps another table (or is not a mapping file): the draft for blue {} is {} instead",
                    dir.join(p).display(),
                    names::shown_table(&d.target.0, &d.target.1),
                    dir.join(&name).display()
                ));
            }
            taken.push(name.to_lowercase());
            dir.join(name)
        })
        .collect();
    (paths, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft_of(schema: &str, name: &str) -> model::TableDraft {
        model::TableDraft {
            target: (schema.into(), name.into()),
            source: (schema.into(), name.into()),
            ..model::TableDraft::default()
        }
    }

    /// Tester's finding 10: `T.toml` and `t.toml` are one file on a case-insensitive file
    /// system; finding 9: a file of the same name mapping another table is kept.
    #[test]
    fn file_names_differ_without_case_and_skip_files_of_other_tables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jobs.toml"), "target = \"public.other\"\n").unwrap();
        let existing = file::read_dir(dir.path()).unwrap();
        let present = entries(dir.path()).unwrap();
        let drafts = [
            draft_of("public", "T"),
            draft_of("public", "t"),
            draft_of("public", "jobs"),
        ];
        let (paths, notes) = file_paths(dir.path(), &drafts, &existing, &present);
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["T.toml", "t-2.toml", "jobs-2.toml"]);
        assert!(
            notes.len() == 1 && notes[0].contains("jobs.toml maps another table"),
            "{notes:?}"
        );
        // The same table's own file keeps its name (and --force may replace it).
        let (paths, notes) = file_paths(dir.path(), &[draft_of("public", "other")], &existing, &present);
        assert!(paths[0].ends_with("other.toml") && notes.is_empty());
    }

    /// Tester's finding 7: a write that fails part-way leaves the files as they were and no
    /// temporaries behind.
    #[test]
    fn a_failed_write_leaves_every_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("a.toml");
        std::fs::write(&kept, "old").unwrap();
        // The second target is a directory that holds a file: renaming onto it fails.
        let blocked = dir.path().join("b.toml");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), "").unwrap();
        let missing = dir.path().join("no such dir").join("c.toml");
        let err = replace_all(&[kept.clone(), missing], &["new".into(), "new".into()]).unwrap_err();
        assert!(err.to_string().contains("nothing written"), "{err}");
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "old");
        let err = replace_all(&[blocked.clone(), kept.clone()], &["new".into(), "new".into()]).unwrap_err();
        assert!(err.to_string().contains("cannot replace"), "{err}");
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "old");
        let left = entries(dir.path()).unwrap();
        assert!(left.iter().all(|n| !n.ends_with(".tmp")), "{left:?}");
    }
}
