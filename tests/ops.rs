//! What operators run beside pgbridge: the alert rules (checked and unit-tested with promtool),
//! the Grafana dashboard and the rules using only exported metric names, a real Prometheus
//! scraping a running pgbridge on loopback, the compose stack's files, and JSON logs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgbridge::telemetry::names;

use crate::support::bridge::{wait_for, Pair, DB};
use crate::telemetry::http_get;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tool(name: &str) -> PathBuf {
    let found =
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()));
    found.unwrap_or_else(|| panic!("{name} not found: run scripts/ensure-prometheus.sh (Debian package prometheus)"))
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = repo("docker/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(tool("promtool"))
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Metric names in a PromQL text, with histogram suffixes folded onto their metric.
fn metric_names(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("pgbridge_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let mut name = tail[..end].to_string();
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                name = base.to_string();
            }
        }
        found.push(name);
        rest = &tail[end..];
    }
    found
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("docker/grafana/dashboards/pgbridge.json")).unwrap())
            .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    let alerts: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("docker/prometheus/alerts.yml")).unwrap()).unwrap();
    for group in alerts["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            exprs.push(rule["expr"].as_str().unwrap().to_string());
        }
    }
    let mut used: Vec<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    used.sort();
    used.dedup();
    for name in &used {
        assert!(
            names::ALL.contains(&name.as_str()),
            "{name} is used by the dashboard or alerts but not exported"
        );
    }
    // The dashboard shows what the issue asks for.
    for wanted in [
        names::LAG_BYTES,
        names::LAG_SECONDS,
        names::TRANSACTIONS_APPLIED,
        names::ROWS_APPLIED,
        names::APPLY_BATCH_ROWS,
        names::APPLY_DURATION,
        names::REPLICATION_DELAY,
        names::SLOT_RETAINED_WAL_BYTES,
        names::STATE,
        names::ERRORS,
        names::RECONNECTS,
        names::ROLLBACK_READY,
        names::ROLLBACK_CONDITION,
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(wanted)),
            "the dashboard or alerts lack {wanted}"
        );
    }
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Prometheus scrapes a running pgbridge on loopback and evaluates the alert rules.
#[test]
fn prometheus_scrapes_a_running_bridge() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY)");
    pair.setup();
    let bridge = pair.run();
    pair.green.psql(DB, "INSERT INTO t SELECT generate_series(1, 10)");
    pair.wait_caught_up(&bridge);

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo("docker/prometheus/alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n\
             scrape_configs:\n  - job_name: pgbridge\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
            pair.metrics_port
        ),
    )
    .unwrap();
    let web = free_port();
    let child = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _prometheus = Prometheus(child);
    let query = |q: &str| {
        http_get(web, &format!("/api/v1/query?query={q}"))
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    wait_for(
        Duration::from_secs(60),
        || {
            let body = query("pgbridge_rows_applied_total");
            body.contains("\"op\":\"insert\"") && body.contains("\"10\"")
        },
        || format!("prometheus never scraped the rows counter: {}", query("up")),
    );
    let state = query("pgbridge_state%7Bstate%3D%22streaming%22%7D");
    assert!(state.contains("\"1\"]"), "{state}");
    let rules = http_get(web, "/api/v1/rules").map(|(_, b)| b).unwrap_or_default();
    assert!(
        rules.contains("PgbridgeLagHigh") && rules.contains("\"health\":\"ok\""),
        "{rules}"
    );
}

#[test]
fn compose_stack_refers_to_files_that_exist() {
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("docker/compose.yaml")).unwrap()).expect("valid YAML");
    let services = compose["services"].as_mapping().expect("services");
    let names: Vec<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for wanted in ["green", "blue", "pgbridge", "prometheus", "grafana"] {
        assert!(names.contains(&wanted), "service {wanted} missing");
    }
    assert_eq!(compose["services"]["green"]["image"].as_str(), Some("postgres:17"));
    assert_eq!(compose["services"]["blue"]["image"].as_str(), Some("postgres:15"));
    let build = &compose["services"]["pgbridge"]["build"];
    let context = repo("docker").join(build["context"].as_str().unwrap());
    assert!(
        context.join(build["dockerfile"].as_str().unwrap()).is_file(),
        "Dockerfile missing"
    );
    let mut host_ports = Vec::new();
    for (name, service) in services {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let host = volume.as_str().unwrap().split(':').next().unwrap();
            let path = repo("docker").join(host);
            assert!(path.exists(), "{name:?} mounts {host}, which is not in the repository");
        }
        for port in service["ports"].as_sequence().into_iter().flatten() {
            host_ports.push(port.as_str().unwrap().split(':').next().unwrap().to_string());
        }
        if name.as_str() != Some("pgbridge") {
            assert!(
                service["image"].as_str().is_some_and(|i| i.contains(':')),
                "{name:?} pins an image tag"
            );
        }
    }
    let mut unique = host_ports.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), host_ports.len(), "host ports clash: {host_ports:?}");
    // The bridge's config listens where Prometheus scrapes.
    let config = std::fs::read_to_string(repo("docker/pgbridge.toml")).unwrap();
    assert!(config.contains("listen = \"0.0.0.0:9187\""));
    assert!(std::fs::read_to_string(repo("docker/prometheus/prometheus.yml"))
        .unwrap()
        .contains("pgbridge:9187"));
    let dockerfile = std::fs::read_to_string(repo("docker/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("USER pgbridge") && dockerfile.matches("FROM ").count() == 2,
        "multi-stage, non-root"
    );
}

#[test]
fn json_logs_for_log_shippers() {
    let pair = Pair::start();
    pair.both("CREATE TABLE t (id int PRIMARY KEY)");
    pair.setup();
    let log = pair.dir.path().join("json.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = pair
        .command(&["--log-format", "json", "run"])
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("streaming from green")
        },
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("message").is_some(), "{line}");
    }
}
