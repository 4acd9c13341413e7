//! The configuration's examples: defaults, messages, and what is refused.

use super::*;

fn parse(text: &str) -> Result<Config> {
    Config::parse(text, Path::new("/etc/pgbridge/pgbridge.toml"), &|name| {
        (name == "GREEN_PASSWORD").then(|| "s3cret".to_string())
    })
}

const MINIMAL: &str = r#"
[green]
dsn = "postgres://bridge:${GREEN_PASSWORD}@green-host:5432/app"
[blue]
dsn = "host=blue-host port=5433 user=bridge dbname=app"
"#;

#[test]
fn minimal_file_gets_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.publication, "pgbridge");
    assert_eq!(c.slot, "pgbridge_to_blue");
    assert_eq!(c.schema, "pgbridge");
    assert_eq!(c.max_batch_rows, 10_000);
    assert_eq!(c.max_batch_delay, Duration::from_millis(20));
    assert_eq!(c.on_error, OnError::Stop);
    assert_eq!(c.metrics_listen, "127.0.0.1:9187");
    assert_eq!(c.mapping_dir, Path::new("/etc/pgbridge/mappings"));
    assert!(c.implicit && c.strict);
    assert_eq!(c.green.pg.get_password(), Some(&b"s3cret"[..]));
    assert_eq!(
        c.blue_timezone, None,
        "blue's own default zone unless the file names one"
    );
}

#[test]
fn blue_timezone_is_taken_as_written_and_never_empty() {
    let with = |line: &str| parse(&MINIMAL.replace("dbname=app\"", &format!("dbname=app\"\n{line}")));
    let c = with("timezone = \" America/St_Johns \"").unwrap();
    assert_eq!(c.blue_timezone.as_deref(), Some("America/St_Johns"));
    let e = with("timezone = \"\"").unwrap_err().to_string();
    assert!(e.contains("blue.timezone") && e.contains("not a time zone name"), "{e}");
    let e = with("time_zone = \"UTC\"").unwrap_err().to_string();
    assert!(
        e.contains("unknown key `time_zone`") && e.contains("did you mean `timezone`"),
        "{e}"
    );
}

#[test]
fn descriptions_never_contain_the_password() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.green.describe(), "green (bridge@green-host:5432/app)");
    assert!(!format!("{:?}", c.green).contains("s3cret"));
}

#[test]
fn unknown_keys_are_errors_naming_file_and_key() {
    let err = parse(&format!("{MINIMAL}\n[apply]\nmax_batch_rowz = 5\n")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/etc/pgbridge/pgbridge.toml"), "{msg}");
    assert!(msg.contains("max_batch_rowz"), "{msg}");
}

#[test]
fn syntax_errors_never_echo_a_dsn() {
    let text = MINIMAL.replace("${GREEN_PASSWORD}", "pa\\ss");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(
        msg.contains(":3:") && msg.contains("dsn") && !msg.contains("pa\\ss"),
        "{msg}"
    );
}

#[test]
fn bad_sslmode_and_ambiguous_hosts_are_refused() {
    let tls = MINIMAL.replace("app\"\n[blue]", "app?sslmode=strict\"\n[blue]");
    let msg = parse(&tls).unwrap_err().to_string();
    assert!(msg.contains("green.dsn sslmode=strict is not a valid sslmode"), "{msg}");
    let ok = MINIMAL.replace("app\"\n[blue]", "app?sslmode=require\"\n[blue]");
    assert_eq!(parse(&ok).unwrap().green.tls.mode, crate::tls::SslMode::Require);
    let at = MINIMAL.replace("${GREEN_PASSWORD}", "p@ss");
    let msg = parse(&at).unwrap_err().to_string();
    assert!(msg.contains("%40") && !msg.contains("p@ss"), "{msg}");
}

#[test]
fn unset_variable_is_named() {
    let text = MINIMAL.replace("GREEN_PASSWORD", "NOPE");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.contains("${NOPE}") && msg.contains("green.dsn"), "{msg}");
}

#[test]
fn bad_values_are_explained() {
    let bad_delay = format!("{MINIMAL}\n[apply]\nmax_batch_delay = \"soon\"\n");
    assert!(parse(&bad_delay).unwrap_err().to_string().contains("max_batch_delay"));
    let bad_slot = MINIMAL.replace("[blue]", "slot = \"Bad-Slot\"\n[blue]");
    assert!(parse(&bad_slot).unwrap_err().to_string().contains("green.slot"));
    let bad_policy = format!("{MINIMAL}\n[apply]\non_error = \"ignore\"\n");
    assert!(parse(&bad_policy).unwrap_err().to_string().contains("on_error"));
}

#[test]
fn table_names_split_like_postgres() {
    assert_eq!(split_table_name("orders"), Some(("public".into(), "orders".into())));
    assert_eq!(
        split_table_name("Sales.Orders"),
        Some(("sales".into(), "orders".into()))
    );
    assert_eq!(
        split_table_name("\"My Schema\".\"Or\"\"ders\""),
        Some(("My Schema".into(), "Or\"ders".into()))
    );
    assert_eq!(split_table_name("a.b.c"), None);
    assert_eq!(split_table_name("drop table x;"), None);
    assert_eq!(parse_table_name("\"Order\""), Some((None, "Order".into())));
    assert_eq!(
        parse_table_name(" \"Sales Dept\".\"Order\" "),
        Some((Some("Sales Dept".into()), "Order".into()))
    );
    assert_eq!(parse_table_name("\"Sales Dept\".\"Order"), None);
    assert_eq!(parse_table_name("Sales Dept.Order"), None);
}

#[test]
fn misspelt_keys_get_a_suggestion_only_when_close() {
    let msg = parse(&format!("{MINIMAL}\n[aply]\nmax_batch_rows = 5\n"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("unknown key `aply`") && msg.contains("did you mean `apply`?"),
        "{msg}"
    );
    let msg = parse(&format!("{MINIMAL}\n[zzzzzz]\n")).unwrap_err().to_string();
    assert!(
        msg.contains("unknown key `zzzzzz`") && !msg.contains("did you mean"),
        "{msg}"
    );
    let dsn = MINIMAL.replace("dbname=app\"", "dbname=app sslmod=require\"");
    let msg = parse(&dsn).unwrap_err().to_string();
    assert!(msg.contains("unknown key sslmod; did you mean sslmode?"), "{msg}");
}

#[test]
fn switches_are_read_with_the_configuration() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.switches, Switches::default());
    let c = Config::parse(MINIMAL, Path::new("/etc/pgbridge/pgbridge.toml"), &|name| match name {
        "GREEN_PASSWORD" => Some("s3cret".into()),
        "PGBRIDGE_STREAMING" => Some("off".into()),
        "PGBRIDGE_APPLY" => Some("exact".into()),
        "PGBRIDGE_VERIFY_CHUNK_ROWS" => Some("7".into()),
        _ => None,
    })
    .unwrap();
    assert!(!c.switches.streaming && !c.switches.batching);
    assert_eq!(c.switches.verify_chunk_rows, 7);
}

#[test]
fn of_several_mistakes_the_first_in_section_order_is_reported() {
    // The order Config::parse checks in: sides, apply policy, exclude, sequences, origins, listen.
    let text = MINIMAL.replace("[blue]", "slot = \"Bad-Slot\"\norigin = \"some\"\n[blue]")
        + "[apply]\non_error = \"ignore\"\n[mapping]\nexclude = [\"a.b.c\"]\n[metrics]\nlisten = \"nowhere\"\n";
    let first = |text: &str| parse(text).unwrap_err().to_string();
    assert!(first(&text).contains("green.slot"), "{}", first(&text));
    let text = text.replace("Bad-Slot", "good_slot");
    assert!(first(&text).contains("apply.on_error"), "{}", first(&text));
    let text = text.replace("\"ignore\"", "\"stop\"");
    assert!(first(&text).contains("mapping.exclude"), "{}", first(&text));
    let text = text.replace("a.b.c", "a.b");
    assert!(first(&text).contains("green.origin"), "{}", first(&text));
    let text = text.replace("\"some\"", "\"any\"");
    assert!(first(&text).contains("metrics.listen"), "{}", first(&text));
    assert!(parse(&text.replace("nowhere", "127.0.0.1:1")).is_ok());
}

#[test]
fn several_hosts_are_kept_each_with_its_port_and_the_primary_is_asked_for() {
    let multi = MINIMAL
        .replace(
            "green-host:5432/app",
            "green-a:5432,green-b:5433/app?target_session_attrs=primary",
        )
        .replace("host=blue-host port=5433", "host=blue-a,blue-b port=6432");
    let c = parse(&multi).unwrap();
    assert_eq!(c.green.host_count(), 2);
    assert_eq!(c.green.address(), "green-a:5432,green-b:5433/app");
    assert_eq!(c.green.single_host(1).address(), "green-b:5433/app");
    assert_eq!(
        c.green.single_host(1).pg.get_password(),
        Some(&b"s3cret"[..]),
        "every host gets the same credentials"
    );
    assert_eq!(c.blue.address(), "blue-a:6432,blue-b:6432/app");
    assert_eq!(
        c.green.pg.get_connect_timeout(),
        Some(&Duration::from_secs(10)),
        "a host that does not answer must not hold up the next one"
    );
    for attrs in ["standby", "prefer-standby", "read-only"] {
        let err = parse(&MINIMAL.replace("5432/app", &format!("5432/app?target_session_attrs={attrs}")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("green.dsn has target_session_attrs"), "{err}");
        assert!(err.contains("pgbridge needs green's primary"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}

#[test]
fn blue_standbys_are_all_or_distinct_names() {
    let with = |line: &str| parse(&MINIMAL.replace("dbname=app\"", &format!("dbname=app\"\n{line}")));
    assert_eq!(parse(MINIMAL).unwrap().blue_standbys, None);
    assert_eq!(with("standbys = \"all\"").unwrap().blue_standbys, Some(Standbys::All));
    assert_eq!(
        with("standbys = [\"blue_b\", \"blue c\"]").unwrap().blue_standbys,
        Some(Standbys::Named(vec!["blue_b".into(), "blue c".into()]))
    );
    for (line, why) in [
        ("standbys = \"ALL\"", "= \"ALL\" is not \"all\" nor a list"),
        ("standbys = []", "is an empty list"),
        ("standbys = [\"a\", \"a\"]", "names \"a\" twice"),
        ("standbys = [\"\"]", "not an application_name"),
        ("standbys = [\"blå\"]", "not an application_name"),
        ("standbys = [1]", "which is not a string"),
        ("standbys = true", "is a boolean"),
    ] {
        let e = with(line).unwrap_err().to_string();
        assert!(
            e.starts_with("/etc/pgbridge/pgbridge.toml: blue.standbys ") && e.contains(why),
            "{line}: {e}"
        );
    }
}

#[test]
fn ready_limits_have_defaults_and_refuse_what_is_not_a_limit() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(
        c.ready,
        ReadyLimits {
            max_bytes: 64 << 20,
            max_seconds: 10.0,
            max_retained_bytes: 1 << 30,
            max_stall: Duration::from_secs(60),
        }
    );
    let set = parse(&format!(
        "{MINIMAL}\n[ready]\nmax_bytes = 0\nmax_seconds = 2.5\nmax_retained_bytes = 5\nmax_stall = \"2m\"\n"
    ))
    .unwrap();
    assert_eq!((set.ready.max_bytes, set.ready.max_seconds), (0, 2.5));
    assert_eq!(set.ready.max_stall, Duration::from_secs(120));
    for (bad, key) in [
        ("max_seconds = -1.0", "ready.max_seconds"),
        ("max_stall = \"soon\"", "ready.max_stall"),
        ("max_lag = 5", "unknown key `max_lag`"),
    ] {
        let e = parse(&format!("{MINIMAL}\n[ready]\n{bad}\n")).unwrap_err().to_string();
        assert!(e.contains(key), "{bad}: {e}");
    }
}
