//! Names and values the configuration checks without a server: table and sequence names as
//! SQL writes them, `${VAR}` expansion, and what PostgreSQL accepts as a publication, schema,
//! slot, origin or time zone name (whether blue knows the zone is asked when a command
//! connects).

use std::path::Path;

use crate::error::{Error, Result};

/// Splits `schema.table` (or `table`, meaning `public`) into its parts. Quoted names are
/// accepted: `"My Schema"."Orders"`.
pub fn split_table_name(name: &str) -> Option<(String, String)> {
    parse_table_name(name).map(|(schema, table)| (schema.unwrap_or_else(|| "public".into()), table))
}

/// A table name as mapping files write it, as (schema if given, table): unquoted parts are
/// folded to lower case as SQL does, quoted ones kept as written (`"Sales Dept"."Order"`).
pub fn parse_table_name(name: &str) -> Option<(Option<String>, String)> {
    let mut parts = split_qualified(name)?;
    let table = parts.pop()?;
    match parts.pop() {
        None => Some((None, table)),
        Some(schema) if parts.is_empty() => Some((Some(schema), table)),
        Some(_) => None,
    }
}

fn split_qualified(name: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = name.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == '$') {
                    return None;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return None;
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => continue,
            Some(_) => return None,
        }
    }
}

/// Replaces `${VAR}` with the variable's value; returns the name of the first unset variable,
/// or `None` for a `${...}` whose inside is not a variable name.
pub(super) fn expand_env(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, Option<String>> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(None);
        }
        out.push_str(&env(name).ok_or_else(|| Some(name.to_string()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(super) fn check_identifier(path: &Path, key: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 63 || value.contains('\0') {
        return Err(Error::definite(format!(
            "{}: {key} = {value:?} must be 1 to 63 bytes without NUL",
            path.display()
        )));
    }
    Ok(())
}

/// A plausible time zone name: blue is asked whether it knows the zone when a command connects
/// (see [`crate::evaluation`]); here only what can never be one is refused.
pub(super) fn check_timezone(path: &Path, zone: &str) -> Result<String> {
    let zone = zone.trim();
    if zone.is_empty() || zone.len() > 255 || zone.chars().any(char::is_control) {
        return Err(Error::definite(format!(
            "{}: blue.timezone = {zone:?} is not a time zone name; write one from blue's pg_timezone_names, e.g. \
             \"Europe/Berlin\", or remove the key to use blue's default",
            path.display()
        )));
    }
    Ok(zone.to_string())
}

/// PostgreSQL accepts only lower-case letters, digits and underscores in slot names.
pub(super) fn check_slot_name(path: &Path, slot: &str) -> Result<()> {
    let valid = !slot.is_empty()
        && slot.len() <= 63
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::definite(format!(
            "{}: green.slot = {slot:?} is not a valid slot name; use 1 to 63 lower-case letters, digits or underscores",
            path.display()
        )))
    }
}

/// Longest origin name pgbridge takes: PostgreSQL allows 512 bytes, and streamed
/// transactions use the name with a suffix (see `apply::origin`).
const MAX_ORIGIN_NAME: usize = 500;

/// A replication origin name PostgreSQL accepts.
pub(super) fn check_origin_name(path: &Path, name: &str) -> Result<()> {
    let file = path.display();
    if name.len() > MAX_ORIGIN_NAME {
        return Err(Error::definite(format!(
            "{file}: apply.origin is {} bytes long; use at most {MAX_ORIGIN_NAME}",
            name.len()
        )));
    }
    if name.starts_with("pg_") || name.eq_ignore_ascii_case("none") || name.eq_ignore_ascii_case("any") {
        return Err(Error::definite(format!(
            "{file}: apply.origin = {name:?} is reserved by PostgreSQL (names starting with pg_, \"none\" and \
             \"any\"); choose another name, e.g. \"pgbridge_to_blue\""
        )));
    }
    Ok(())
}
