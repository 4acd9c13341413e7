//! TLS to both sides with libpq's sslmode semantics, against real servers with certificates
//! made by the test: a private CA, green's certificate issued for 127.0.0.1 (verify-full
//! passes), blue's for db.test (only verify-ca passes). Both servers refuse connections without
//! TLS (`hostnossl ... reject`), so a working flow proves every connection was encrypted.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::support::bridge::{text, Pair, DB};
use crate::support::cluster::{give_to_server, server_files_dir};
use crate::support::ClusterOptions;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("CA certificate");
    Ca { cert, key }
}

/// Writes a server certificate for `names` signed by `ca` into `dir`; returns the options
/// that turn TLS on and refuse plain-text TCP connections.
fn tls_server(ca: &Ca, names: &[&str], dir: &Path, tag: &str) -> ClusterOptions {
    let key = KeyPair::generate().expect("server key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("pgbridge test {tag}"));
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("server certificate");
    let cert_path = dir.join(format!("{tag}.crt"));
    let key_path = dir.join(format!("{tag}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    give_to_server(&cert_path);
    give_to_server(&key_path);
    ClusterOptions {
        settings: vec![
            ("ssl".into(), "on".into()),
            ("ssl_cert_file".into(), cert_path.display().to_string()),
            ("ssl_key_file".into(), key_path.display().to_string()),
        ],
        hba: vec!["hostnossl all all 127.0.0.1/32 reject".into()],
        ..Default::default()
    }
}

struct TlsPair {
    pair: Pair,
    ca_file: PathBuf,
    wrong_ca_file: PathBuf,
    _files: tempfile::TempDir,
}

impl TlsPair {
    fn start() -> TlsPair {
        let files = server_files_dir();
        let ca = ca("pgbridge test CA");
        let green = tls_server(&ca, &["127.0.0.1"], files.path(), "green");
        let blue = tls_server(&ca, &["db.test"], files.path(), "blue");
        let ca_file = files.path().join("root.crt");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let wrong_ca_file = files.path().join("other-root.crt");
        std::fs::write(&wrong_ca_file, self::ca("some other CA").cert.pem()).unwrap();
        let pair = Pair::start_with(green, blue);
        pair.both("CREATE TABLE t (id int PRIMARY KEY, v text)");
        TlsPair {
            pair,
            ca_file,
            wrong_ca_file,
            _files: files,
        }
    }

    fn configure(&self, green: &str, blue: &str) {
        let g = format!("{}?{green}", self.pair.green.dsn(DB));
        let b = format!("{}?{blue}", self.pair.blue.dsn(DB));
        self.pair.write_config_with(&g, &b, "");
    }

    fn root(&self) -> String {
        format!("sslrootcert={}", self.ca_file.display())
    }

    fn wrong_root(&self) -> String {
        format!("sslrootcert={}", self.wrong_ca_file.display())
    }

    fn verified(&self) -> (String, String) {
        (
            format!("sslmode=verify-full&{}", self.root()),
            format!("sslmode=verify-ca&{}", self.root()),
        )
    }
}

/// The whole flow (setup, streaming, wait) over verify-full to green and verify-ca to blue,
/// with both servers refusing anything unencrypted.
#[test]
fn tls_flow_with_verify_full_and_verify_ca() {
    let t = TlsPair::start();
    let (green, blue) = t.verified();
    t.configure(&green, &blue);
    t.pair.setup();
    let bridge = t.pair.run();
    t.pair
        .green
        .psql(DB, "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 500) g");
    let out = t.pair.pgbridge(&["wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    t.pair.assert_same("t");
    let walsenders = t.pair.green.psql(
        DB,
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.backend_type = 'walsender' AND s.ssl",
    );
    assert_eq!(walsenders, "1", "the replication connection uses TLS");
    let appliers = t.pair.blue.psql(
        DB,
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'pgbridge' AND s.ssl",
    );
    assert!(appliers != "0", "the apply connection uses TLS");
    assert_eq!(bridge.terminate(), 0);
}

/// `status` exit code and output with blue's sslmode set to `blue`.
fn status_with_blue(t: &TlsPair, blue: &str) -> (Option<i32>, String) {
    let (green, _) = t.verified();
    t.configure(&green, blue);
    let out = t.pair.pgbridge(&["status"]);
    (out.status.code(), text(&out))
}

/// Each sslmode accepts and refuses exactly what libpq's does.
#[test]
fn tls_modes_check_what_libpq_checks() {
    let t = TlsPair::start();
    let (green, blue) = t.verified();
    t.configure(&green, &blue);
    t.pair.setup();

    // Blue's certificate names db.test, not 127.0.0.1.
    let (code, out) = status_with_blue(&t, &format!("sslmode=verify-full&{}", t.root()));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("sslmode=verify-full") && out.contains("127.0.0.1") && out.contains("verify-ca"),
        "the error says the name does not match and what to do:\n{out}"
    );
    // A root that did not sign blue's certificate.
    let (code, out) = status_with_blue(&t, &format!("sslmode=verify-ca&{}", t.wrong_root()));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("does not chain") && out.contains("other-root.crt"),
        "the error names the root file:\n{out}"
    );
    // require with a root file checks the chain, as libpq does; without one it encrypts only.
    let (code, out) = status_with_blue(&t, &format!("sslmode=require&{}", t.wrong_root()));
    assert_eq!(code, Some(2), "{out}");
    let (code, out) = status_with_blue(&t, "sslmode=require");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = status_with_blue(&t, "sslmode=prefer");
    assert_eq!(code, Some(0), "{out}");
    // disable never tries TLS, so blue's hostnossl reject rule turns it away.
    let (code, out) = status_with_blue(&t, "sslmode=disable");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("no encryption"),
        "blue's pg_hba.conf refusal is shown:\n{out}"
    );
    // verify-ca without any root file cannot check anything: refused before connecting.
    let (code, out) = status_with_blue(&t, "sslmode=verify-ca&sslrootcert=/nonexistent/root.crt");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("blue.dsn sslrootcert=/nonexistent/root.crt"), "{out}");

    // Green's replication connection checks the same way.
    t.configure(&format!("sslmode=verify-full&{}", t.wrong_root()), &blue);
    let out = t.pair.pgbridge(&["run"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("green") && all.contains("does not chain"), "{all}");
}

/// A server without TLS: require and stronger refuse to go on in plain text; prefer does.
#[test]
fn tls_required_but_server_has_none() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY)");
    let g = format!("{}?sslmode=require", pair.green.dsn(DB));
    pair.write_config_with(&g, &pair.blue.dsn(DB), "");
    let out = pair.pgbridge(&["setup"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("server does not support TLS") && all.contains("turn ssl on") && !all.contains("check host"),
        "{all}"
    );
    let g = format!("{}?sslmode=prefer", pair.green.dsn(DB));
    let b = format!("{}?sslmode=prefer", pair.blue.dsn(DB));
    pair.write_config_with(&g, &b, "");
    pair.setup();
}
