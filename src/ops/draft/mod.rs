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
//! - [`pairing`]: which green-only thing is a renamed blue-only thing;
//! - [`forward`], [`reverse`]: one table's draft; [`tables`]: every table's;
//! - [`model`]: a draft and its text.

pub mod catalog;
pub mod forward;
pub mod model;
pub mod names;
pub mod pairing;
pub mod reverse;
pub mod tables;

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
    let q = names::Quoter::new(catalog::keywords(&blue, "blue").await?);
    let drafted = if options.reverse {
        let ids: Vec<(String, String)> = published
            .iter()
            .map(|t| (t.namespace.clone(), t.name.clone()))
            .collect();
        tables::reverse(&ids, &green_all, &blue_all, &forward_files, &q)
    } else {
        // Green's tables as the stream carries them: published columns only.
        let green_tables: Vec<catalog::Table> = published
            .iter()
            .filter_map(|p| {
                let mut t = green_all.get(&(p.namespace.clone(), p.name.clone()))?.clone();
                t.columns.retain(|c| p.columns.iter().any(|pc| pc.name == c.name));
                Some(t)
            })
            .collect();
        tables::forward(&green_tables, &blue_all, &q, config.implicit)
    };
    let written = write(&out, &drafted.drafts, options.force)?;
    Ok(Outcome {
        out,
        written,
        same: drafted.same,
        attention: drafted.attention,
        notes: drafted.notes,
    })
}

/// Writes every draft into `dir`, or nothing: a file that exists is overwritten only with
/// `force`, and a file of another name that maps the same table never (two files for one
/// table would not load).
fn write(dir: &Path, drafts: &[model::TableDraft], force: bool) -> Result<Vec<Written>> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::definite(format!(
            "cannot create {}: {e}; pass --out a directory you can write to",
            dir.display()
        ))
    })?;
    let existing = file::read_dir(dir)
        .map_err(|e| Error::definite(format!("cannot read the mappings already in {}: {e}", dir.display())))?;
    let paths = file_paths(dir, drafts);
    let mut conflicts = Vec::new();
    for (d, path) in drafts.iter().zip(&paths) {
        if path.exists() && !force {
            conflicts.push(format!("{} exists (--force overwrites it)", path.display()));
        }
        for f in existing.iter().filter(|f| &f.path != path) {
            if f.target == d.target || f.source == d.source {
                conflicts.push(format!(
                    "{} already maps blue {}.{} <- green {}.{} (remove it to draft this table again)",
                    f.path.display(),
                    f.target.0,
                    f.target.1,
                    f.source.0,
                    f.source.1
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
    let mut written = Vec::new();
    for (d, path) in drafts.iter().zip(paths) {
        std::fs::write(&path, d.render()).map_err(|e| {
            Error::definite(format!(
                "cannot write {}: {e}; pass --out a directory you can write to",
                path.display()
            ))
        })?;
        written.push(Written {
            path,
            target: format!("{}.{}", d.target.0, d.target.1),
            source: format!("{}.{}", d.source.0, d.source.1),
            lines: d.lines.clone(),
            decisions: d.decisions(),
        });
    }
    Ok(written)
}

/// A file per draft, named after its target; a name taken twice gets a number.
fn file_paths(dir: &Path, drafts: &[model::TableDraft]) -> Vec<PathBuf> {
    let mut taken: Vec<String> = Vec::new();
    drafts
        .iter()
        .map(|d| {
            let base = names::file_name(&d.target.0, &d.target.1);
            let mut name = base.clone();
            let mut n = 2;
            while taken.contains(&name) {
                name = format!("{}-{n}.toml", base.trim_end_matches(".toml"));
                n += 1;
            }
            taken.push(name.clone());
            dir.join(name)
        })
        .collect()
}
