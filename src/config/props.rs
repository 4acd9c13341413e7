//! Property tests: no text, however mangled, makes the configuration parser panic, span lines
//! or show a password.

use proptest::prelude::*;

use super::*;
use crate::tls::{split_dsn, DsnTls};

const FILE: &str = "/etc/pgbridge/pgbridge.toml";
const PASSWORD: &str = "s3cr3t-pw";

/// Valid configurations with a password in their DSNs: in a URL, quoted in key=value form,
/// percent-encoded, and from `${GREEN_PASSWORD}`.
const VALID: [&str; 3] = [
    r#"[green]
dsn = "postgres://bridge:s3cr3t-pw@green-host:5432/app?sslmode=prefer&application_name=pgbridge"
publication = "pgbridge"
slot = "pgbridge_to_blue"

[blue]
dsn = "host=blue-host port=5433 user=bridge password=s3cr3t-pw dbname=app sslmode=disable"
schema = "pgbridge"

[mapping]
dir = "mappings"
implicit = true
strict = true
exclude = ["public.audit", "\"Odd Schema\".\"T\""]

[apply]
max_batch_rows = 10000
max_batch_delay = "20ms"
on_error = "dead_letter"

[metrics]
listen = "127.0.0.1:9187"

[sequences]
"public.orders_id_seq" = "public.purchases_id_seq"
"#,
    r#"[green]
dsn = "host=green-host user=bridge password='s3cr3t-pw' dbname=app sslmode=require"
[blue]
dsn = "postgres://bridge:${GREEN_PASSWORD}@blue-host/app"
"#,
    "[blue]\ndsn = 'postgresql://bridge:s3cr3t%2Dpw@[::1]:5433/app'\n\
     [green]\ndsn = \"\"\"\nhost=green-host password=s3cr3t-pw\"\"\"\n",
];

/// Connection strings with the password before TLS parameters, after them, and quoted: the
/// text before the password, the password with its key, the text after.
const DSNS: [(&str, &str, &str); 3] = [
    (
        "postgres://bridge",
        ":s3cr3t-pw@",
        "green-host:5432/app?sslmode=require&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
    ),
    (
        "sslmode=require sslrootcert=/etc/ca.pem ",
        "password=s3cr3t-pw",
        " host=h user=bridge dbname=app",
    ),
    (
        "host=h user=bridge ",
        "password='s3cr3t-pw'",
        " dbname=app connect_timeout=5 sslmode=prefer",
    ),
];

/// Edits that matter to a connection string: its punctuation, and deletions.
fn dsn_edit() -> impl Strategy<Value = mutate::Edit> {
    let fragment = prop::sample::select(vec![
        "'", "\"", " ", "=", "&", "?", "@", ":", "/", "%", "\\", "${", "}", "#", ",", "[", "]",
    ]);
    prop_oneof![
        (any::<usize>(), fragment.clone()).prop_map(|(at, s)| mutate::Edit::Insert(at, s.to_string())),
        (any::<usize>(), 1..8usize).prop_map(|(at, n)| mutate::Edit::Delete(at, n)),
        (any::<usize>(), fragment).prop_map(|(at, s)| mutate::Edit::Replace(at, s.to_string())),
    ]
}

/// `value` as a TOML basic string, so that it reaches the DSN parser unchanged.
fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn parse(text: &str) -> Result<Config> {
    Config::parse(text, Path::new(FILE), &|name| {
        (name == "GREEN_PASSWORD").then(|| PASSWORD.to_string())
    })
}

/// An error names the file, is one line, and holds no part of the password.
fn check_error(err: &Error, file: &str) -> std::result::Result<(), TestCaseError> {
    let msg = err.to_string();
    prop_assert!(!msg.trim().is_empty());
    prop_assert!(msg.contains(file), "the error does not name {}: {}", file, msg);
    prop_assert!(!msg.contains('\n'), "the error spans several lines: {}", msg);
    prop_assert!(!msg.contains("s3cr3t"), "the error shows the password: {}", msg);
    Ok(())
}

/// A configuration that parsed never shows the password when printed.
fn check_config(config: &Config) -> std::result::Result<(), TestCaseError> {
    for endpoint in [&config.green, &config.blue] {
        let visible = format!("{:?} {}", endpoint.pg.get_user(), endpoint.dbname());
        let hosts = format!("{:?}", endpoint.pg.get_hosts());
        // A mutation can turn the password into a user, database or host name, which are shown.
        if !visible.contains("s3cr3t") && !hosts.contains("s3cr3t") {
            prop_assert!(!endpoint.describe().contains("s3cr3t"));
        }
    }
    let shown = format!("{config:?}");
    let named = [&config.green, &config.blue]
        .iter()
        .any(|e| format!("{} {:?}", e.describe(), e.pg.get_options()).contains("s3cr3t"));
    if !named {
        prop_assert!(!shown.contains("s3cr3t"), "{}", shown);
    }
    Ok(())
}

/// What is left after taking the TLS parameters out has none.
fn split_twice(dsn: &str) -> std::result::Result<(), TestCaseError> {
    let (rest, _) = split_dsn(dsn);
    prop_assert_eq!(split_dsn(&rest).1, DsnTls::default(), "{:?} left {:?}", dsn, rest);
    Ok(())
}

#[test]
fn valid_texts_parse_and_carry_the_password() {
    for text in VALID {
        let config = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.green.pg.get_password(), Some(PASSWORD.as_bytes()), "{text}");
        assert_eq!(config.blue.pg.get_password(), Some(PASSWORD.as_bytes()), "{text}");
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_is_refused_cleanly(text in any::<String>()) {
        match parse(&text) {
            Ok(config) => check_config(&config)?,
            Err(e) => check_error(&e, FILE)?,
        }
    }

    #[test]
    fn arbitrary_text_around_a_valid_config_is_refused_cleanly(
        base in 0..VALID.len(),
        before in ".{0,16}",
        after in ".{0,16}",
    ) {
        let text = format!("{before}{}{after}", VALID[base]);
        match parse(&text) {
            Ok(config) => check_config(&config)?,
            Err(e) => check_error(&e, FILE)?,
        }
    }

    #[test]
    fn arbitrary_bytes_in_the_file_are_refused_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbridge.toml");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = Config::load(&path) {
            check_error(&e, &path.display().to_string())?;
        }
    }

    #[test]
    fn mutated_configs_never_show_the_password(
        base in 0..VALID.len(),
        edits in prop::collection::vec(mutate::edit(), 1..4),
    ) {
        let text = mutate::apply(VALID[base], &edits);
        match parse(&text) {
            Ok(config) => check_config(&config)?,
            Err(e) => check_error(&e, FILE)?,
        }
    }

    #[test]
    fn split_dsn_takes_out_every_tls_parameter_of_arbitrary_text(dsn in any::<String>()) {
        split_twice(&dsn)?;
    }

    #[test]
    fn split_dsn_takes_out_every_tls_parameter_of_mutated_dsns(
        base in prop::sample::select(vec![
            "postgres://bridge:s3cr3t-pw@green-host:5432/app?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem",
            "host=h user=bridge password='s3\\'cr3t pw' sslmode = require sslrootcert='/x y/ca.pem' dbname=d",
        ]),
        edits in prop::collection::vec(mutate::edit(), 1..4),
    ) {
        split_twice(&mutate::apply(base, &edits))?;
    }

    /// key=value form: every value quoted, with arbitrary characters.
    #[test]
    fn split_dsn_keeps_quoted_values_apart(
        password in ".{0,12}",
        user in ".{0,8}",
        sslmode in ".{0,10}",
        sslrootcert in ".{0,10}",
        tls_first: bool,
    ) {
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let plain = format!("user={} password={}", quote(&user), quote(&password));
        let tls = format!("sslmode={} sslrootcert={}", quote(&sslmode), quote(&sslrootcert));
        let dsn = if tls_first { format!("{tls} {plain} host=h") } else { format!("host=h {plain} {tls}") };
        let (rest, found) = split_dsn(&dsn);
        prop_assert_eq!(found.sslmode.as_deref(), Some(sslmode.as_str()));
        prop_assert_eq!(found.sslrootcert.as_deref(), Some(sslrootcert.as_str()));
        let pg: tokio_postgres::Config = rest.parse().map_err(|e| TestCaseError::fail(format!("{rest}: {e:?}")))?;
        prop_assert_eq!(pg.get_password(), Some(password.as_bytes()));
        prop_assert_eq!(pg.get_user(), Some(user.as_str()));
    }

    /// URL form: every value percent-encoded.
    #[test]
    fn split_dsn_decodes_url_parameters(
        password in ".{1,12}",
        sslmode in ".{0,10}",
        sslrootcert in ".{0,10}",
        tls_first: bool,
    ) {
        let encode = |v: &str| v.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        let tls = format!("sslmode={}&sslrootcert={}", encode(&sslmode), encode(&sslrootcert));
        let query = if tls_first {
            format!("{tls}&application_name=x")
        } else {
            format!("application_name=x&{tls}")
        };
        let dsn = format!("postgres://bridge:{}@h:5432/db?{query}", encode(&password));
        let (rest, found) = split_dsn(&dsn);
        let expected = format!("postgres://bridge:{}@h:5432/db?application_name=x", encode(&password));
        prop_assert_eq!(rest.as_str(), expected);
        prop_assert_eq!(found.sslmode.as_deref(), Some(sslmode.as_str()));
        prop_assert_eq!(found.sslrootcert.as_deref(), Some(sslrootcert.as_str()));
        let pg: tokio_postgres::Config = rest.parse().map_err(|e| TestCaseError::fail(format!("{rest}: {e:?}")))?;
        prop_assert_eq!(pg.get_password(), Some(password.as_bytes()));
    }
}

proptest! {
    // The most pointed target: more cases, each cheap.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Edits around the password (never inside it: an edit can make it part of another
    /// value, a file name for instance, which is then rightly shown).
    #[test]
    fn mutated_dsns_never_show_the_password(
        (before, password, after) in prop::sample::select(DSNS.to_vec()),
        edits_before in prop::collection::vec(dsn_edit(), 0..3),
        edits_after in prop::collection::vec(dsn_edit(), 0..3),
        green: bool,
    ) {
        let dsn = format!(
            "{}{password}{}",
            mutate::apply(before, &edits_before),
            mutate::apply(after, &edits_after)
        );
        let dsn = toml_string(&dsn);
        let text = if green {
            format!("[green]\ndsn = {dsn}\n[blue]\ndsn = \"host=b\"\n")
        } else {
            format!("[green]\ndsn = \"host=g\"\n[blue]\ndsn = {dsn}\n")
        };
        match parse(&text) {
            Ok(config) => check_config(&config)?,
            Err(e) => check_error(&e, FILE)?,
        }
    }
}
