//! The source layout keeps its promises (README "Development"): commands are thin and hold no
//! SQL, nothing below the command layer imports from it, top-level modules import each other
//! without cycles, and functions and files stay small enough to read. No server needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest function allowed outside test modules, in lines.
const MAX_FUNCTION_LINES: usize = 80;
/// Largest file allowed outside test modules, in lines; protocol tables are exempt.
const MAX_FILE_LINES: usize = 700;
/// Files that are tables of a protocol, long by nature.
const PROTOCOL_TABLES: &[&str] = &["protocol/pgoutput.rs"];

struct Source {
    /// Path below `src/`, with `/` separators.
    path: String,
    /// The file without its `#[cfg(test)] mod tests` module and comments.
    code: Vec<String>,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("source file");
            let path = file
                .strip_prefix(&root)
                .expect("below src")
                .to_string_lossy()
                .replace('\\', "/");
            let lines: Vec<&str> = text.lines().collect();
            let end = lines
                .windows(2)
                .position(|w| w[0].starts_with("#[cfg(test)]") && w[1].starts_with("mod "))
                .unwrap_or(lines.len());
            let code = lines[..end].iter().map(|l| without_comment(l)).collect();
            Source { path, code }
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The line without a trailing `//` comment (string contents are blanked first).
fn without_comment(line: &str) -> String {
    let blanked = blank_strings(line);
    match blanked.find("//") {
        Some(at) => line[..at].to_string(),
        None => line.to_string(),
    }
}

/// The line with the contents of string and char literals replaced by spaces (byte positions
/// kept), so braces and slashes inside them are not counted.
fn blank_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in line.chars() {
        if in_string {
            out.push(if c == '"' && !escaped { '"' } else { ' ' });
            if c == '"' && !escaped {
                in_string = false;
            }
            escaped = c == '\\' && !escaped;
            // keep byte positions for multi-byte characters
            for _ in 1..c.len_utf8() {
                out.push(' ');
            }
        } else {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The top-level module a file belongs to (`apply`, `cli`, ...), or `crate` for lib.rs/main.rs.
fn top_module(path: &str) -> String {
    let first = path.split('/').next().unwrap_or(path);
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => "crate".to_string(),
        Some(name) => name.to_string(),
        None => first.to_string(),
    }
}

/// Top-level modules a file refers to through `crate::`.
fn references(code: &[String]) -> BTreeSet<String> {
    let text = code.join("\n");
    let mut found = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn nothing_below_the_commands_imports_from_them() {
    let offenders: Vec<String> = sources()
        .iter()
        .filter(|s| !s.path.starts_with("cli/") && s.path != "main.rs" && s.path != "lib.rs")
        .filter(|s| references(&s.code).contains("cli"))
        .map(|s| s.path.clone())
        .collect();
    assert!(offenders.is_empty(), "these files import from cli/: {offenders:?}");
}

#[test]
fn commands_hold_no_sql() {
    const SQL: &[&str] = &[
        "SELECT ",
        "INSERT ",
        "UPDATE ",
        "DELETE ",
        "CREATE ",
        "ALTER ",
        "DROP ",
        "GRANT ",
        "TRUNCATE ",
        ".query(",
        ".query_one(",
        ".query_opt(",
        ".execute(",
        ".batch_execute(",
        ".simple_query(",
        ".prepare(",
    ];
    let mut offenders = Vec::new();
    for source in sources().iter().filter(|s| s.path.starts_with("cli/")) {
        for (i, line) in source.code.iter().enumerate() {
            if let Some(word) = SQL.iter().find(|w| line.contains(*w)) {
                offenders.push(format!("src/{}:{}: {word:?}", source.path, i + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL in the command layer:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources() {
        let from = top_module(&source.path);
        for to in references(&source.code) {
            if to != from && from != "crate" {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // A cycle exists when some module reaches itself.
    let mut cycles = Vec::new();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = todo.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    cycles.push(format!("{} -> {start}", path.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    todo.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles between top-level modules:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn functions_and_files_stay_small() {
    let mut long = Vec::new();
    for source in sources() {
        let exempt = PROTOCOL_TABLES.contains(&source.path.as_str());
        if source.code.len() > MAX_FILE_LINES && !exempt {
            long.push(format!("src/{}: {} lines", source.path, source.code.len()));
        }
        for (start, name, lines) in functions(&source.code) {
            if lines > MAX_FUNCTION_LINES {
                long.push(format!("src/{}:{} fn {name}: {lines} lines", source.path, start + 1));
            }
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX_FUNCTION_LINES} lines per function or {MAX_FILE_LINES} per file:\n{}",
        long.join("\n")
    );
}

/// (first line, name, length in lines) of every function with a body.
fn functions(code: &[String]) -> Vec<(usize, String, usize)> {
    let mut found = Vec::new();
    for (start, line) in code.iter().enumerate() {
        let Some(name) = function_name(line) else { continue };
        let mut depth = 0i32;
        let mut opened = false;
        for (offset, body) in code[start..].iter().enumerate() {
            let body = blank_strings(body);
            for c in body.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if !opened && body.trim_end().ends_with(';') {
                break;
            }
            if opened && depth <= 0 {
                found.push((start, name.clone(), offset + 1));
                break;
            }
        }
    }
    found
}

/// The name of the function a line declares, if it does.
fn function_name(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "fn")?;
    let qualifiers_only = words[..at]
        .iter()
        .all(|w| matches!(*w, "pub" | "async" | "const" | "unsafe") || w.starts_with("pub("));
    if !qualifiers_only {
        return None;
    }
    let name: String = words
        .get(at + 1)?
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}
