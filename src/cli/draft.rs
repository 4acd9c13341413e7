//! `pgbridge draft [--reverse] [--out DIR] [--force]`: write mapping files from both live
//! catalogs ([`crate::ops::draft`]) and say, table by table, what was written and what needs
//! a person. Exit 0 when nothing is left to decide, 1 when something is (marked in the files
//! so that `check` fails), 2 when nothing could be written.
//!
//! Every line starts with a word a script can match: `wrote`, `same`, `attention`, `note`
//! and, indented under a file, `rename`, `cast`, `ignore`, `omit`, `decide`; the last line
//! starts with `draft:`.

use crate::config::Config;
use crate::error::Result;
use crate::ops::draft::names::one_line;
use crate::ops::draft::{self, Options, Outcome, Tag};

pub async fn run(config: &Config, options: &Options) -> Result<i32> {
    let outcome = draft::draft(config, options).await?;
    print(&outcome, options.reverse);
    Ok(if outcome.decisions() == 0 { 0 } else { 1 })
}

fn print(o: &Outcome, reverse: bool) {
    let (to, from) = if reverse { ("green", "blue") } else { ("blue", "green") };
    for w in &o.written {
        let state = if w.decisions == 0 {
            String::new()
        } else {
            format!(" ({} decision(s) left)", w.decisions)
        };
        line(&format!(
            "wrote {}: {to} {} <- {from} {}{state}",
            w.path.display(),
            w.target,
            w.source
        ));
        for l in &w.lines {
            let label = if l.tag == Tag::Decide { "DECIDE" } else { l.tag.label() };
            line(&format!("  {label:<7} {}", l.text));
        }
    }
    for t in &o.same {
        line(&format!(
            "same {t}: same columns and types on both sides; maps by name, no file"
        ));
    }
    for a in &o.attention {
        line(&format!("attention {a}"));
    }
    for n in &o.notes {
        line(&format!("note {n}"));
    }
    let decisions = o.decisions();
    let next = if decisions == 0 {
        "review the files, then run pgbridge check"
    } else {
        "settle each DECIDE and attention line, review the rest, then run pgbridge check (it fails until then)"
    };
    line(&format!(
        "draft: {} file(s) written to {}, {} table(s) map by name, {decisions} decision(s) left; {next}",
        o.written.len(),
        o.out.display(),
        o.same.len()
    ));
}

/// One output line, whatever the names in it hold: a script reads one line per item.
fn line(text: &str) {
    println!("{}", one_line(text));
}
