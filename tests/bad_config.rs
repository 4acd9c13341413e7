//! Bad configuration and mapping files, as a table: each case is a file (or a set of mapping
//! files) and the exact error line the user sees. Every one must stop with exit code 2 and that
//! one line on stderr, must never print the password, and must leave nothing behind.
//!
//! The servers are real and reachable, so "refused before anything was created" is observed,
//! not assumed: the configuration is refused before pgbridge connects, the mapping files right
//! after it has read both catalogs and before it creates anything.

use std::process::Output;

use crate::support::bridge::{text, Pair, DB};

/// The password in green's DSN (green trusts local connections, so it is never checked).
const PASSWORD: &str = "s3cr3t-pw";

/// A variable that is never set when pgbridge runs.
const UNSET: &str = "PGBRIDGE_TEST_UNSET_VARIABLE";

/// A valid configuration, 7 lines; `{green}` and `{blue}` are the live servers' DSNs, green's
/// with [`PASSWORD`].
const BASE: &str = "[green]\ndsn = \"{green}\"\nslot = \"pgbridge_to_blue\"\n\n\
                    [blue]\ndsn = \"{blue}\"\nschema = \"pgbridge\"\n";

/// (what is wrong, `pgbridge.toml` (`{base}` is [`BASE`]), the error line (`{file}` is the
/// configuration's path)).
const CONFIG_CASES: &[(&str, &str, &str)] = &[
    // Missing required keys.
    (
        "empty file",
        "",
        "error: {file}: [green] is missing; add a [green] section with \
         dsn = \"postgres://user@host:5432/dbname\" (the database whose changes are streamed)",
    ),
    (
        "no [green]",
        "[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: [green] is missing; add a [green] section with \
         dsn = \"postgres://user@host:5432/dbname\" (the database whose changes are streamed)",
    ),
    (
        "no [blue]",
        "[green]\ndsn = \"{green}\"\n",
        "error: {file}: [blue] is missing; add a [blue] section with \
         dsn = \"postgres://user@host:5432/dbname\" (the database pgbridge writes to)",
    ),
    (
        "no green dsn",
        "[green]\nslot = \"pgbridge_to_blue\"\n\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn is missing; add dsn = \"postgres://user@host:5432/dbname\" under [green]",
    ),
    (
        "no blue dsn",
        "[green]\ndsn = \"{green}\"\n\n[blue]\nschema = \"pgbridge\"\n",
        "error: {file}: blue.dsn is missing; add dsn = \"postgres://user@host:5432/dbname\" under [blue]",
    ),
    // Wrong types.
    (
        "[green] written as a DSN string (never echoed: it holds the password)",
        "green = \"{green}\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}:1:9: green: expected a [green] table, found a string",
    ),
    (
        "string where an integer is expected",
        "{base}[apply]\nmax_batch_rows = \"many\"\n",
        "error: {file}:9:18: max_batch_rows: expected a whole number, found a string",
    ),
    (
        "negative integer",
        "{base}[apply]\nmax_batch_rows = -1\n",
        "error: {file}:9:18: max_batch_rows: expected a whole number, found integer `-1`",
    ),
    (
        "zero batch size",
        "{base}[apply]\nmax_batch_rows = 0\n",
        "error: {file}: apply.max_batch_rows must be at least 1",
    ),
    (
        "integer where a string is expected",
        "{base}[apply]\nmax_batch_delay = 20\n",
        "error: {file}:9:19: max_batch_delay: expected a string, found integer `20`",
    ),
    (
        "duration without a unit",
        "{base}[apply]\nmax_batch_delay = \"20\"\n",
        "error: {file}: apply.max_batch_delay = \"20\" is not a duration (time unit needed, for example 20sec or \
         20ms); write e.g. \"20ms\" or \"1s\"",
    ),
    (
        "duration that is a word",
        "{base}[apply]\nmax_batch_delay = \"soon\"\n",
        "error: {file}: apply.max_batch_delay = \"soon\" is not a duration (expected number at 0); write e.g. \
         \"20ms\" or \"1s\"",
    ),
    (
        "bad on_error value",
        "{base}[apply]\non_error = \"ignore\"\n",
        "error: {file}: apply.on_error = \"ignore\" is not one of \"stop\", \"dead_letter\"",
    ),
    (
        "on_error as a boolean",
        "{base}[apply]\non_error = true\n",
        "error: {file}:9:12: on_error: expected a string, found boolean `true`",
    ),
    (
        "string where a boolean is expected",
        "{base}[mapping]\nstrict = \"yes\"\n",
        "error: {file}:9:10: strict: expected a boolean, found a string",
    ),
    (
        "string where an array is expected",
        "{base}[mapping]\nexclude = \"public.audit\"\n",
        "error: {file}:9:11: exclude: expected an array like [\"a\", \"b\"], found a string",
    ),
    (
        "metrics port as an integer",
        "{base}[metrics]\nlisten = 9187\n",
        "error: {file}:9:10: listen: expected a string, found integer `9187`",
    ),
    (
        "metrics address without a port",
        "{base}[metrics]\nlisten = \"localhost\"\n",
        "error: {file}: metrics.listen = \"localhost\" is not an address to listen on; write host:port, e.g. \
         \"127.0.0.1:9187\" or \"[::]:9187\"",
    ),
    // Unknown keys.
    (
        "misspelt section",
        "{base}[aply]\nmax_batch_rows = 5\n",
        "error: {file}:8:2: unknown key `aply`, expected one of `green`, `blue`, `mapping`, `apply`, `metrics`, \
         `sequences`, `ready`; did you mean `apply`?",
    ),
    (
        "misspelt key in a section",
        "{base}[apply]\nmax_batch_rowz = 5\n",
        "error: {file}:9:1: unknown key `max_batch_rowz`, expected one of `max_batch_rows`, `max_batch_delay`, \
         `on_error`, `origin`; did you mean `max_batch_rows`?",
    ),
    (
        "unknown top-level key",
        "verbose = true\n{base}",
        "error: {file}:1:1: unknown key `verbose`, expected one of `green`, `blue`, `mapping`, `apply`, `metrics`, \
         `sequences`, `ready`",
    ),
    (
        "key in the wrong section",
        "{base}slot = \"other\"\n",
        "error: {file}:8:1: unknown key `slot`, expected one of `dsn`, `schema`, `timezone`, `standbys`",
    ),
    (
        "misspelt key in [green]",
        "[green]\ndsn = \"{green}\"\npublcation = \"pgbridge\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}:3:1: unknown key `publcation`, expected one of `dsn`, `publication`, `slot`, `origin`; \
         did you mean `publication`?",
    ),
    // Malformed TOML.
    (
        "duplicate key",
        "[green]\ndsn = \"{green}\"\nslot = \"a\"\nslot = \"b\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}:4:1: duplicate key `slot` in table `green`",
    ),
    (
        "unclosed table header",
        "{base}[apply\nmax_batch_rows = 5\n",
        "error: {file}:8:7: invalid table header; expected `.`, `]`",
    ),
    (
        "key without =",
        "[green]\ndsn \"{green}\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}:2:5: a key must be followed by = and its value",
    ),
    (
        "unterminated string holding the password",
        "[green]\ndsn = \"postgres://postgres:s3cr3t-pw@127.0.0.1:5432/postgres\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}:2:61: dsn: invalid basic string",
    ),
    // Connection strings (none is ever echoed: they hold passwords).
    (
        "port that is not a number",
        "[green]\ndsn = \"postgres://postgres:s3cr3t-pw@127.0.0.1:fivefour/postgres\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn is not a valid connection string (invalid value for option `port`); use a URL \
         like postgres://user@host:5432/dbname or key=value pairs",
    ),
    (
        "URL of another scheme",
        "[green]\ndsn = \"mysql://postgres:s3cr3t-pw@127.0.0.1/postgres\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn is not a valid connection string (a URL must start with postgres:// or \
         postgresql://); use a URL like postgres://user@host:5432/dbname or key=value pairs",
    ),
    (
        "misspelt key=value option",
        "[green]\ndsn = \"host=127.0.0.1 password=s3cr3t-pw dbnme=postgres\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn is not a valid connection string (unknown key dbnme; did you mean dbname?); use a \
         URL like postgres://user@host:5432/dbname or key=value pairs",
    ),
    (
        "password with a space, not quoted",
        "[green]\ndsn = \"host=127.0.0.1 password=s3cr3t-pw and=more\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn is not a valid connection string (it has an unknown key; check the spelling of \
         each key, and quote values with spaces: password='a b'); use a URL like postgres://user@host:5432/dbname \
         or key=value pairs",
    ),
    (
        "unclosed quote",
        "[green]\ndsn = \"host=127.0.0.1 password='s3cr3t-pw\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn is not a valid connection string (a quoted value has no closing quote); use a URL \
         like postgres://user@host:5432/dbname or key=value pairs",
    ),
    (
        "@ in the password, not percent-encoded",
        "[green]\ndsn = \"postgres://postgres:s3cr3t@pw@127.0.0.1/postgres\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn has an '@' in its host part; percent-encode '@' in user names and passwords as %40",
    ),
    (
        "no host",
        "[green]\ndsn = \"dbname=postgres password=s3cr3t-pw\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn names no host; add one, e.g. postgres://user@localhost:5432/dbname",
    ),
    (
        "bad sslmode",
        "[green]\ndsn = \"{green}?sslmode=strict\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn sslmode=strict is not a valid sslmode; use disable, prefer, require, verify-ca or \
         verify-full",
    ),
    (
        "empty sslmode swallowing the password",
        "[green]\ndsn = \"host=127.0.0.1 sslmode= password=s3cr3t-pw\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn sslmode has a value that is not an sslmode; use disable, prefer, require, \
         verify-ca or verify-full",
    ),
    (
        "empty sslrootcert swallowing the password",
        "[green]\ndsn = \"host=127.0.0.1 sslrootcert= password=s3cr3t-pw\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn sslrootcert has a value with = in it, not a file name; quote a path with spaces: \
         sslrootcert='/a b/root.crt'",
    ),
    (
        "missing root certificate",
        "[blue]\ndsn = \"{blue}?sslmode=verify-full&sslrootcert=/nonexistent/root.crt\"\n[green]\ndsn = \"{green}\"\n",
        "error: {file}: blue.dsn sslrootcert=/nonexistent/root.crt: cannot read PEM certificates: I/O error: No such \
         file or directory (os error 2); point sslrootcert at the CA certificate file",
    ),
    (
        "unset ${VAR}",
        "[green]\ndsn = \"postgres://postgres:${PGBRIDGE_TEST_UNSET_VARIABLE}@127.0.0.1/postgres\"\n\
         [blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn uses ${PGBRIDGE_TEST_UNSET_VARIABLE} but the environment variable \
         PGBRIDGE_TEST_UNSET_VARIABLE is not set; set it or write the value itself",
    ),
    (
        "${...} around the password",
        "[green]\ndsn = \"postgres://postgres:${s3cr3t-pw}@127.0.0.1/postgres\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.dsn has a ${...} that is not a variable name; write ${NAME} with letters, digits and \
         underscores",
    ),
    // Names.
    (
        "slot name PostgreSQL refuses",
        "[green]\ndsn = \"{green}\"\nslot = \"Bad-Slot\"\n[blue]\ndsn = \"{blue}\"\n",
        "error: {file}: green.slot = \"Bad-Slot\" is not a valid slot name; use 1 to 63 lower-case letters, digits or \
         underscores",
    ),
    (
        "empty schema",
        "[green]\ndsn = \"{green}\"\n[blue]\ndsn = \"{blue}\"\nschema = \"\"\n",
        "error: {file}: blue.schema = \"\" must be 1 to 63 bytes without NUL",
    ),
    (
        "SQL in an excluded table's name",
        "{base}[mapping]\nexclude = [\"public.t; DROP TABLE x\"]\n",
        "error: {file}: mapping.exclude entry \"public.t; DROP TABLE x\" is not a table name; write \"schema.table\" \
         or \"table\"",
    ),
    (
        "[sequences] name with three parts",
        "{base}[sequences]\n\"app.public.orders_id_seq\" = \"public.purchases_id_seq\"\n",
        "error: {file}: [sequences] entry \"app.public.orders_id_seq\" is not a sequence name; write \
         \"schema.sequence\" or \"sequence\"",
    ),
    (
        "[sequences] name with SQL in it",
        "{base}[sequences]\n\"public.orders_id_seq\" = \"public.s; DROP SEQUENCE x\"\n",
        "error: {file}: [sequences] entry \"public.s; DROP SEQUENCE x\" is not a sequence name; write \
         \"schema.sequence\" or \"sequence\"",
    ),
    (
        "[sequences] name without its table part",
        "{base}[sequences]\n\"public.\" = \"public.s\"\n",
        "error: {file}: [sequences] entry \"public.\" is not a sequence name; write \"schema.sequence\" or \
         \"sequence\"",
    ),
    (
        "[sequences] value that is not a string",
        "{base}[sequences]\n\"public.orders_id_seq\" = 5\n",
        "error: {file}:9:26: \"public.orders_id_seq\": expected a string, found integer `5`",
    ),
    (
        "[sequences] that is not a table",
        "sequences = [\"public.orders_id_seq\"]\n{base}",
        "error: {file}:1:13: sequences: expected a table, found an array",
    ),
];

/// The configuration used with mapping files: [`BASE`] reading `mappings/` next to it.
const MAPPING_CONFIG: &str = "{base}[mapping]\ndir = \"mappings\"\n";

/// Mapping files: (path in the mapping directory, contents); the path `.` makes the mapping
/// directory itself a file.
type Files = &'static [(&'static str, &'static str)];

/// (what is wrong, files in the mapping directory, the error line (`{dir}` is the directory)).
/// Blue and green both have `public.t (id int PRIMARY KEY, v text)` and `public.x (id int)`.
const MAPPING_CASES: &[(&str, Files, &str)] = &[
    (
        "a source that is not a green table",
        &[("a.toml", "target = \"nothere\"\nsource = \"public.nope\"\n")],
        "error: {dir}/a.toml: source public.nope is not among the green tables to stream; fix source, create the \
         table, or delete the file; nothing was created",
    ),
    (
        "two files for one blue table",
        &[
            ("a.toml", "target = \"t\"\n"),
            ("b.toml", "target = \"public.t\"\nsource = \"x\"\n"),
        ],
        "error: {dir}/a.toml and {dir}/b.toml both map blue table public.t; keep one",
    ),
    (
        "two files reading one green table",
        &[
            ("a.toml", "target = \"t\"\n"),
            ("b.toml", "target = \"x\"\nsource = \"public.t\"\n"),
        ],
        "error: {dir}/a.toml and {dir}/b.toml both read green table public.t; one green table feeds one blue table",
    ),
    (
        "SQL in the target",
        &[("a.toml", "target = \"public.t; DROP TABLE x\"\n")],
        "error: {dir}/a.toml:1: target = \"public.t; DROP TABLE x\" is not a table name; write \"schema.table\" or \
         \"table\"",
    ),
    (
        "SQL in a quoted target: a name, quoted wherever it is used",
        &[(
            "a.toml",
            "target = '\"public\".\"t; DROP TABLE x\"'\nsource = \"public.t\"\n",
        )],
        "error: {dir}/a.toml: target public.\"t; DROP TABLE x\" does not exist on blue; create it or fix \
         target; nothing was created",
    ),
    (
        "quotes and a semicolon in a column name",
        &[(
            "a.toml",
            "target = \"t\"\n[columns]\n'v\"; DROP TABLE x; --' = { from = \"v\" }\n",
        )],
        "error: {dir}/a.toml:3: columns.v\"; DROP TABLE x; --: blue table public.t has no column v\"; DROP TABLE x; \
         --; nothing was created",
    ),
    (
        "quotes and a semicolon in a key column",
        &[("a.toml", "target = \"t\"\n[key]\n'id\"); DROP TABLE x; --' = \"id\"\n")],
        "error: {dir}/a.toml: [key] names {\"id\\\"); DROP TABLE x; --\"} but blue table public.t has no primary key \
         or unique index (on NOT NULL columns, not deferrable, not partial) on exactly those columns; usable keys: \
         (id); nothing was created",
    ),
    (
        "column with both from and expr",
        &[(
            "a.toml",
            "target = \"t\"\n[columns]\nv = { from = \"v\", expr = \"upper(v)\" }\n",
        )],
        "error: {dir}/a.toml:3: columns.v: use only one of from, expr and omit = true",
    ),
    (
        "column with nothing to feed it",
        &[("a.toml", "target = \"t\"\n[columns]\nv = { on = \"insert\" }\n")],
        "error: {dir}/a.toml:3: columns.v: say how the column is fed: { from = \"green_column\" }, \
         { expr = \"sql\" } or { omit = true }",
    ),
    (
        "column as a plain string",
        &[("a.toml", "target = \"t\"\n[columns]\nv = \"v\"\n")],
        "error: {dir}/a.toml:3:5: v: expected an inline table like { from = \"green_column\" }, found a string",
    ),
    (
        "unknown on value",
        &[(
            "a.toml",
            "target = \"t\"\n[columns]\nv = { from = \"v\", on = \"update\" }\n",
        )],
        "error: {dir}/a.toml:3: columns.v: on = \"update\" is not supported; the only value is \"insert\"",
    ),
    (
        "empty expression",
        &[("a.toml", "target = \"t\"\n[columns]\nv = { expr = \" \" }\n")],
        "error: {dir}/a.toml:3: columns.v: expr is empty",
    ),
    (
        "empty filter",
        &[("a.toml", "target = \"t\"\n[filter]\nwhere = \"\"\n")],
        "error: {dir}/a.toml:3: filter.where is empty",
    ),
    (
        "unknown key at the top",
        &[("a.toml", "target = \"t\"\ncolumn = { v = { from = \"v\" } }\n")],
        "error: {dir}/a.toml:2:1: unknown key `column`, expected one of `target`, `source`, `ignore`, `columns`, \
         `key`, `filter`; did you mean `columns`?",
    ),
    (
        "misspelt section",
        &[("a.toml", "target = \"t\"\n[colums]\nv = { from = \"v\" }\n")],
        "error: {dir}/a.toml:2:2: unknown key `colums`, expected one of `target`, `source`, `ignore`, `columns`, \
         `key`, `filter`; did you mean `columns`?",
    ),
    (
        "misspelt key in a column",
        &[("a.toml", "target = \"t\"\n[columns]\nv = { fromm = \"v\" }\n")],
        "error: {dir}/a.toml:3:7: v: unknown key `fromm`, expected one of `from`, `expr`, `omit`, `on`, `decide`; \
         did you mean `from`?",
    ),
    (
        "no target",
        &[("a.toml", "source = \"public.t\"\n")],
        "error: {dir}/a.toml: target is missing; add target = \"schema.table\", the blue table this file fills",
    ),
    (
        "empty target",
        &[("a.toml", "target = \"\"\n")],
        "error: {dir}/a.toml:1: target = \"\" is not a table name; write \"schema.table\" or \"table\"",
    ),
    (
        "unclosed table header",
        &[("a.toml", "target = \"t\"\n[columns\nv = { from = \"v\" }\n")],
        "error: {dir}/a.toml:2:9: invalid table header; expected `.`, `]`",
    ),
    (
        "unterminated string",
        &[("a.toml", "target = \"t\n")],
        "error: {dir}/a.toml:1:12: target: invalid basic string",
    ),
    (
        "a broken file among good ones, in a subdirectory",
        &[
            ("a.toml", "target = \"t\"\n"),
            ("more/b.toml", "target = \"x\"\nignore = \"id\"\n"),
        ],
        "error: {dir}/more/b.toml:2:10: ignore: expected an array like [\"a\", \"b\"], found a string",
    ),
    (
        "mapping directory that is a file",
        &[(".", "target = \"t\"\n")],
        "error: cannot read mapping directory {dir}: Not a directory (os error 20); point [mapping] dir at a \
         directory of mapping files",
    ),
];

/// Why `out` is not the refusal `expected`, or `None` when it is: exit code 2, exactly
/// `expected` as the one `error: ` line on stderr, nothing after it, and no password anywhere.
fn refusal_problem(out: &Output, expected: &str) -> Option<String> {
    let everything = text(out);
    if everything.contains("s3cr3t") {
        return Some(format!("the output shows the password:\n{everything}"));
    }
    if out.status.code() != Some(2) {
        return Some(format!("exit code {:?}, not 2:\n{everything}", out.status.code()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let errors: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("error: ")).collect();
    let [at] = errors[..] else {
        return Some(format!("expected one `error:` line on stderr:\n{everything}"));
    };
    if lines
        .get(at + 1)
        .is_some_and(|next| next.starts_with(char::is_whitespace))
    {
        return Some(format!("the error goes on over several lines:\n{everything}"));
    }
    (lines[at] != expected).then(|| format!("expected: {expected}\n     got: {}", lines[at]))
}

/// Two servers with `public.t` and `public.x`, a table no statement may drop.
fn pair() -> Pair {
    let pair = Pair::start();
    pair.both("CREATE TABLE public.t (id int PRIMARY KEY, v text); CREATE TABLE public.x (id int PRIMARY KEY)");
    pair
}

/// Why the servers are not as [`pair`] left them, if they are not: a publication, slot or
/// schema of pgbridge's, or `public.x` gone.
fn leftovers(pair: &Pair) -> Option<String> {
    let green = pair.green.psql(
        DB,
        "SELECT (SELECT count(*) FROM pg_publication) || ' publication(s), ' || \
         (SELECT count(*) FROM pg_replication_slots) || ' slot(s), ' || \
         (SELECT count(*) FROM pg_tables WHERE tablename = 'x') || ' x'",
    );
    let blue = pair.blue.psql(
        DB,
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgbridge') || ' schema(s), ' || \
         (SELECT count(*) FROM pg_tables WHERE tablename = 'x') || ' x'",
    );
    let expected = ("0 publication(s), 0 slot(s), 1 x", "0 schema(s), 1 x");
    ((green.as_str(), blue.as_str()) != expected).then(|| format!("green has {green}; blue has {blue}"))
}

/// `text` with [`BASE`] and the live servers' DSNs filled in.
fn config_text(pair: &Pair, text: &str) -> String {
    text.replace("{base}", BASE)
        .replace("{green}", &pair.green.dsn_as("postgres", Some(PASSWORD), DB))
        .replace("{blue}", &pair.blue.dsn(DB))
}

fn run(pair: &Pair, command: &str) -> Output {
    pair.command(&[command])
        .env_remove(UNSET)
        .output()
        .expect("run pgbridge")
}

#[test]
fn bad_config_each_file_is_refused_with_its_exact_error() {
    let pair = pair();
    let file = pair.config_path().display().to_string();
    let mut wrong = Vec::new();
    for (name, text, expected) in CONFIG_CASES {
        std::fs::write(pair.config_path(), config_text(&pair, text)).expect("write config");
        let expected = expected.replace("{file}", &file);
        // Every command reads the configuration first; two are enough to show it.
        for command in ["setup", "check"] {
            if let Some(problem) = refusal_problem(&run(&pair, command), &expected) {
                wrong.push(format!("{name} (pgbridge {command}): {problem}"));
            }
        }
        if let Some(problem) = leftovers(&pair) {
            panic!("{name}: {problem}");
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n\n{}",
        wrong.len(),
        CONFIG_CASES.len(),
        wrong.join("\n\n")
    );
}

#[test]
fn bad_config_each_mapping_directory_is_refused_with_its_exact_error() {
    let pair = pair();
    let dir = pair.dir.path().join("mappings");
    std::fs::write(pair.config_path(), config_text(&pair, MAPPING_CONFIG)).expect("write config");
    let mut wrong = Vec::new();
    for (name, files, expected) in MAPPING_CASES {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&dir);
        for (path, body) in *files {
            let path = if *path == "." { dir.clone() } else { dir.join(path) };
            std::fs::create_dir_all(path.parent().expect("a directory")).expect("mapping directory");
            std::fs::write(path, body).expect("write mapping");
        }
        let expected = expected.replace("{dir}", &dir.display().to_string());
        if let Some(problem) = refusal_problem(&run(&pair, "setup"), &expected) {
            wrong.push(format!("{name}: {problem}"));
        }
        if let Some(problem) = leftovers(&pair) {
            panic!("{name}: {problem}");
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n\n{}",
        wrong.len(),
        MAPPING_CASES.len(),
        wrong.join("\n\n")
    );
}

/// The other side of "SQL in identifiers": names that are valid, however odd, are quoted
/// wherever pgbridge writes them, so `check`, `setup` and `run` carry the table and never run
/// the SQL inside its names.
#[test]
fn bad_config_sql_in_names_is_quoted_never_run() {
    let pair = pair();
    pair.green.psql(
        DB,
        "CREATE TABLE public.\"t; DROP TABLE x\" (id int PRIMARY KEY, \"w'; DROP TABLE x; --\" text)",
    );
    pair.blue.psql(
        DB,
        "CREATE TABLE public.\"t; DROP TABLE x\" (id int PRIMARY KEY, \"v\"\"; DROP TABLE x; --\" text)",
    );
    let dir = pair.dir.path().join("mappings");
    std::fs::create_dir_all(&dir).expect("mapping directory");
    std::fs::write(
        dir.join("odd.toml"),
        "target = '\"public\".\"t; DROP TABLE x\"'\n\
         [columns]\n'v\"; DROP TABLE x; --' = { from = \"w'; DROP TABLE x; --\" }\n",
    )
    .expect("write mapping");
    std::fs::write(pair.config_path(), config_text(&pair, MAPPING_CONFIG)).expect("write config");

    let check = run(&pair, "check");
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(
        DB,
        "INSERT INTO public.\"t; DROP TABLE x\" VALUES (1, 'one'), (2, 'it''s; DROP TABLE x; --'); \
         UPDATE public.\"t; DROP TABLE x\" SET \"w'; DROP TABLE x; --\" = 'uno' WHERE id = 1; \
         INSERT INTO public.x VALUES (7)",
    );
    pair.wait_caught_up(&bridge);
    assert_eq!(
        pair.blue.psql(
            DB,
            "SELECT string_agg(id || '=' || \"v\"\"; DROP TABLE x; --\", ',' ORDER BY id) \
             FROM public.\"t; DROP TABLE x\""
        ),
        "1=uno,2=it's; DROP TABLE x; --"
    );
    pair.assert_same("public.x");
    assert_eq!(bridge.terminate(), 0);
}
