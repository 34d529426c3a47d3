//! `report` (#11) over a generated month of log lines with known counts, and `--metrics-file` scraped
//! by the real prometheus-node-exporter.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::common::{
    Site, alive, field, free_port, php_relaunch, project, shared_tempdir, signal, stderr, stdout,
    wait_until, wait_until_quietly,
};

/// What the generator wrote, as `report --json` should count it.
#[derive(Debug, Default)]
struct Expected {
    failures: std::collections::BTreeMap<&'static str, u64>,
    relaunches: u64,
    helped: u64,
    not_helped: u64,
    gave_up: u64,
    hook_runs: u64,
    cron_runs: u64,
    skipped: u64,
    incidents: Vec<i64>,
    visitor_502: u64,
    visitor_504: u64,
}

const START: i64 = 1_793_491_200; // 2026-11-01T00:00:00Z

fn stamp(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339()
}

/// One of php-relaunch's lines; `trigger` `None` for a line from before triggers were logged.
fn line(
    t: i64,
    verdict: &str,
    action: &str,
    state: &str,
    trigger: Option<&str>,
    error: &str,
) -> String {
    let url = "http://127.0.0.1:8889/php-heartbeat.php";
    let mut l = format!(
        "{} url={url} verdict={verdict} latency=0.002s action={action} old_pid=- new_pid=- took=- state={state} mail=none",
        stamp(t)
    );
    if let Some(trigger) = trigger {
        let _ = write!(l, " trigger={trigger} events=1");
    }
    if !error.is_empty() {
        let _ = write!(l, " error=\"{error}\"");
    }
    l
}

/// A month of php-relaunch lines in cycles of episodes, each a known mix of verdicts, states and
/// triggers, about 100,000 lines, split into `log.2.gz` (oldest), `log.1` and `log`.
fn generate(dir: &Path) -> (Expected, i64) {
    let mut e = Expected::default();
    let mut lines: Vec<String> = Vec::new();
    let mut t = START;
    while lines.len() < 100_000 {
        cycle(&mut t, &mut e, &mut lines);
    }
    write_rotated(dir, &lines);
    let v = generate_access(dir, &mut e);
    (e, t.max(v))
}

/// One cycle of episodes from `t` on, booked in `e`.
fn cycle(t: &mut i64, e: &mut Expected, lines: &mut Vec<String>) {
    // A healthy hook run (a page's own 502).
    lines.push(line(*t, "200", "none", "healthy", Some("hook"), ""));
    e.hook_runs += 1;
    // A 502 relaunched at once, healthy: an incident of 0 s.
    *t += 15;
    lines.push(line(
        *t,
        "502",
        "restart",
        "healthy",
        Some("cron"),
        "state=down trigger=hook",
    ));
    e.cron_runs += 1;
    *e.failures.entry("502").or_default() += 1;
    e.relaunches += 1;
    e.helped += 1;
    e.incidents.push(0);
    // A timeout: failing, a relaunch that does not help, recovered 90 s after it began.
    *t += 15;
    let began = *t;
    lines.push(line(*t, "timeout", "none", "failing", Some("cron"), ""));
    *t += 60;
    lines.push(line(
        *t,
        "timeout",
        "restart+kill+start",
        "down",
        Some("cron"),
        "",
    ));
    *t += 30;
    lines.push(line(
        *t,
        "200",
        "none",
        "recovered",
        Some("cron"),
        "failing since x (timeout)",
    ));
    *e.failures.entry("timeout").or_default() += 2;
    e.relaunches += 1;
    e.not_helped += 1;
    e.cron_runs += 3;
    e.incidents.push(*t - began);
    // A budget spent on a 504 from the hook: an incident of 150 s.
    *t += 15;
    let began = *t;
    lines.push(line(*t, "504", "gave-up", "down", Some("hook"), ""));
    *t += 150;
    lines.push(line(*t, "200", "budget-restored", "healthy", None, ""));
    *e.failures.entry("504").or_default() += 1;
    e.gave_up += 1;
    e.hook_runs += 1;
    e.cron_runs += 1;
    e.incidents.push(*t - began);
    // The web server down for 20 s, an old line without trigger=.
    *t += 15;
    lines.push(line(*t, "refused", "none", "web-server-down", None, ""));
    *t += 20;
    lines.push(line(*t, "200", "none", "recovered", None, ""));
    *e.failures.entry("refused").or_default() += 1;
    e.cron_runs += 2;
    e.incidents.push(20);
    // Stuck workers killed: a failure, not a relaunch; a pool's replicas relaunched.
    *t += 15;
    lines.push(line(
        *t,
        "timeout",
        "kill-stuck",
        "healthy",
        Some("cron"),
        "",
    ));
    *e.failures.entry("timeout").or_default() += 1;
    e.cron_runs += 1;
    e.incidents.push(0);
    *t += 15;
    lines.push(line(
        *t,
        "502",
        "www/1:restart,www/2:kill+start",
        "healthy",
        Some("hook"),
        "",
    ));
    *e.failures.entry("502").or_default() += 1;
    e.relaunches += 1;
    e.helped += 1;
    e.hook_runs += 1;
    e.incidents.push(0);
    every_other_verdict_and_state(t, e, lines);
    // A pools step (not a run) and a line that is not ours.
    *t += 2;
    lines.push(format!(
        "{} pools: www/1: drained (removed /run/php/www-1.sock)",
        stamp(*t)
    ));
    lines.push("this is not a line of ours".to_owned());
    e.skipped += 1;
    // Spread over a month.
    *t += 300;
}

/// Every other verdict and state, one incident from the first failing line to `idle`.
fn every_other_verdict_and_state(t: &mut i64, e: &mut Expected, lines: &mut Vec<String>) {
    *t += 15;
    let began = *t;
    for (verdict, state) in [
        ("dns", "web-server-down"),
        ("error", "down"),
        ("unhealthy", "unhealthy"),
        ("500", "unexpected-status"),
        ("502", "paused"),
        ("502", "cooldown"),
        ("timeout", "saturated"),
        ("502", "config-error"),
        ("-", "socket-lost"),
        ("-", "idle"),
    ] {
        lines.push(line(*t, verdict, "none", state, Some("cron"), ""));
        if verdict != "-" {
            *e.failures.entry(verdict).or_default() += 1;
        }
        e.cron_runs += 1;
        *t += 2;
    }
    e.incidents.push(*t - 2 - began);
}

/// The lines as `log.2.gz` (the oldest third), `log.1` and `log`.
fn write_rotated(dir: &Path, lines: &[String]) {
    let third = lines.len() / 3;
    let mut gz = GzEncoder::new(
        fs::File::create(dir.join("log.2.gz")).unwrap(),
        Compression::fast(),
    );
    gz.write_all((lines[..third].join("\n") + "\n").as_bytes())
        .unwrap();
    gz.finish().unwrap();
    fs::write(dir.join("log.1"), lines[third..2 * third].join("\n") + "\n").unwrap();
    fs::write(dir.join("log"), lines[2 * third..].join("\n") + "\n").unwrap();
}

/// 20,000 access log lines every 2 minutes, one in ten a 502 and one in twenty a 504, the older half
/// rotated and compressed; the time after the last.
fn generate_access(dir: &Path, e: &mut Expected) -> i64 {
    let mut access = Vec::new();
    let mut v = START + 7;
    for n in 0..20_000u32 {
        let status = match n % 10 {
            0 => {
                e.visitor_502 += 1;
                502
            }
            1 if n % 20 == 1 => {
                e.visitor_504 += 1;
                504
            }
            _ => 200,
        };
        let time = chrono::DateTime::from_timestamp(v, 0)
            .unwrap()
            .format("%d/%b/%Y:%H:%M:%S +0000");
        access.push(format!(
            "127.0.0.1 - - [{time}] \"GET /page-{n}.php HTTP/1.1\" {status} 612 \"-\" \"curl/7.88.1\""
        ));
        v += 120;
    }
    let half = access.len() / 2;
    let mut gz = GzEncoder::new(
        fs::File::create(dir.join("access.log.1.gz")).unwrap(),
        Compression::fast(),
    );
    gz.write_all((access[..half].join("\n") + "\n").as_bytes())
        .unwrap();
    gz.finish().unwrap();
    fs::write(dir.join("access.log"), access[half..].join("\n") + "\n").unwrap();
    v
}

fn report(dir: &Path, extra: &[&str]) -> std::process::Output {
    php_relaunch()
        .arg("report")
        .arg("--log")
        .arg(dir.join("log"))
        .arg("--access-log")
        .arg(dir.join("access.log"))
        .args(extra)
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

#[test]
fn a_month_of_lines_is_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, end) = generate(dir.path());
    let until = stamp(end + 3600);
    for by in ["day", "hour"] {
        let out = report(
            dir.path(),
            &["--since", "40d", "--until", &until, "--by", by, "--json"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let totals = &json["totals"];
        for (verdict, n) in &expected.failures {
            assert_eq!(totals["failures"][verdict], *n, "{by}: {verdict}");
        }
        assert_eq!(
            totals["failures"].as_object().unwrap().len(),
            expected.failures.len()
        );
        for (key, n) in [
            ("relaunches", expected.relaunches),
            ("helped", expected.helped),
            ("not_helped", expected.not_helped),
            ("gave_up", expected.gave_up),
            ("hook_runs", expected.hook_runs),
            ("cron_runs", expected.cron_runs),
            ("visitor_502", expected.visitor_502),
            ("visitor_504", expected.visitor_504),
        ] {
            assert_eq!(totals[key], n, "{by}: {key}");
        }
        assert_eq!(json["skipped"], expected.skipped, "{by}");
        let mut downtimes = expected.incidents.clone();
        downtimes.sort_unstable();
        assert_eq!(json["incidents"]["count"], downtimes.len(), "{by}");
        assert_eq!(json["incidents"]["longest_seconds"], 150.0, "{by}");
        let n = downtimes.len();
        let at = |i: usize| f64::from(i32::try_from(downtimes[i]).unwrap());
        let median = if n % 2 == 1 {
            at(n / 2)
        } else {
            f64::midpoint(at(n / 2 - 1), at(n / 2))
        };
        assert_eq!(json["incidents"]["median_seconds"], median, "{by}");
        assert_eq!(json["files"].as_array().unwrap().len(), 5, "{by}");
    }
}

#[test]
fn the_chart_has_a_bar_per_bucket_with_502s_and_a_marker_per_bucket_with_relaunches() {
    let dir = tempfile::tempdir().unwrap();
    let (_, end) = generate(dir.path());
    let until = stamp(end + 3600);
    let svg = dir.path().join("chart.svg");
    let out = report(
        dir.path(),
        &[
            "--since",
            "40d",
            "--until",
            &until,
            "--json",
            "--svg",
            svg.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let buckets = json["buckets"].as_array().unwrap();
    let with_bars = buckets
        .iter()
        .filter(|b| b["visitor_502"].as_u64().unwrap() + b["visitor_504"].as_u64().unwrap() > 0)
        .count();
    let with_relaunches = buckets
        .iter()
        .filter(|b| b["relaunches"].as_u64().unwrap() > 0)
        .count();
    assert!(
        with_bars > 20 && with_relaunches > 20,
        "{with_bars} {with_relaunches}"
    );
    let text = fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let class = |name: &str| {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(name))
            .count()
    };
    assert_eq!(class("bar"), with_bars);
    assert_eq!(class("relaunch"), with_relaunches);
    assert!(text.contains("relaunches (their number)"), "a legend");
}

#[test]
fn the_table_reads_as_checked_by_hand_and_a_missing_log_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("log"),
        "2026-11-28T10:00:00+00:00 url=u verdict=502 latency=0.001s action=start old_pid=- new_pid=2 took=0.1s state=healthy mail=none\n\
         2026-11-28T11:00:00+00:00 url=u verdict=timeout latency=2s action=none old_pid=- new_pid=- took=- state=failing mail=none trigger=cron events=0\n\
         2026-11-28T11:02:00+00:00 url=u verdict=timeout latency=2s action=restart+kill+start old_pid=1 new_pid=3 took=1s state=down mail=sent trigger=cron events=0\n\
         2026-11-28T11:05:00+00:00 url=u verdict=200 latency=0.001s action=none old_pid=- new_pid=- took=- state=recovered mail=sent trigger=cron events=0\n\
         2026-11-29T09:00:00+00:00 url=u verdict=200 latency=0.001s action=none old_pid=- new_pid=- took=- state=healthy mail=none trigger=hook events=2\n\
         garbage\n",
    )
    .unwrap();
    let out = php_relaunch()
        .args(["report", "--since", "3d", "--until", "2026-11-30", "--log"])
        .arg(dir.path().join("log"))
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "php-relaunch report, 2026-11-27 00:00 to 2026-11-30 00:00, by day (1 files, 1 lines skipped)\n\
         failed checks                 3   █ \n\
         \x20 502                         1   █ \n\
         \x20 timeout                     2   █ \n\
         relaunches                    2   █ \n\
         \x20 healthy after               1  \n\
         \x20 still down after            1  \n\
         gave up                       0     \n\
         runs: hook / cron         1 / 4  \n\
         incidents: 2, downtime median 2m 30s, longest 5m 0s\n"
    );
    let out = php_relaunch()
        .args(["report", "--log"])
        .arg(dir.path().join("nothing-here.log"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

/// The real node_exporter on loopback, reading textfiles from `dir`.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(dir: &Path) -> NodeExporter {
        let port = free_port();
        let child = Command::new("/usr/bin/prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let exporter = NodeExporter { child, port };
        wait_until("node_exporter", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        exporter
    }

    /// The samples of a scrape whose name starts with `php_relaunch_` or `node_textfile_`.
    fn scrape(&self) -> Vec<String> {
        let out = Command::new("curl")
            .args([
                "-s",
                "-m",
                "5",
                &format!("http://127.0.0.1:{}/metrics", self.port),
            ])
            .output()
            .unwrap();
        stdout(&out)
            .lines()
            .filter(|l| {
                l.starts_with("php_relaunch_") || l.starts_with("node_textfile_scrape_error")
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        signal(self.child.id(), rustix::process::Signal::TERM);
        let pid = self.child.id();
        let _ = wait_until_quietly(Duration::from_secs(5), || !alive(pid));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sample<'a>(samples: &'a [String], name_and_labels: &str) -> Option<&'a str> {
    samples
        .iter()
        .find_map(|s| s.strip_prefix(name_and_labels)?.strip_prefix(' '))
}

/// The scrape after a healthy run: up, the timestamps and latency, the whole budget, no error.
fn after_a_healthy_run(exporter: &NodeExporter, metrics: &Path, target: &str) {
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(metrics).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
    let samples = exporter.scrape();
    assert_eq!(
        sample(&samples, &format!("php_relaunch_up{target}")),
        Some("1"),
        "{samples:?}\n{}",
        fs::read_to_string(metrics).unwrap()
    );
    assert_eq!(
        sample(&samples, "node_textfile_scrape_error"),
        Some("0"),
        "{samples:?}"
    );
    for name in [
        "php_relaunch_last_check_timestamp_seconds",
        "php_relaunch_last_healthy_timestamp_seconds",
        "php_relaunch_heartbeat_latency_seconds",
    ] {
        assert!(
            sample(&samples, &format!("{name}{target}")).is_some(),
            "{name}: {samples:?}"
        );
    }
    assert_eq!(
        sample(
            &samples,
            &format!("php_relaunch_restart_budget_remaining{target}")
        ),
        Some("1")
    );
}

#[test]
fn node_exporter_scrapes_the_metrics_of_healthy_relaunched_and_given_up_runs() {
    let site = Site::start();
    let textfiles = shared_tempdir();
    let metrics = textfiles.path().join("php-relaunch.prom");
    let exporter = NodeExporter::start(textfiles.path());
    let heartbeat = site.heartbeat();
    let target = format!("{{target=\"{heartbeat}\"}}");
    // node_exporter prints labels in name order.
    let verdict = |v: &str| format!("{{target=\"{heartbeat}\",verdict=\"{v}\"}}");
    let result = |r: &str| format!("{{result=\"{r}\",target=\"{heartbeat}\"}}");
    let metrics_arg = metrics.display().to_string();
    let run = || {
        site.run(
            &heartbeat,
            "2",
            &[
                "",
                "0",
                "--metrics-file",
                &metrics_arg,
                "--max-restarts",
                "1",
            ],
        )
    };

    assert_eq!(run().status.code(), Some(0));
    after_a_healthy_run(&exporter, &metrics, &target);

    // A 502 relaunched.
    site.fpm.stop();
    let out = run();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let samples = exporter.scrape();
    assert_eq!(
        sample(&samples, &format!("php_relaunch_up{target}")),
        Some("0"),
        "{samples:?}"
    );
    assert_eq!(
        sample(
            &samples,
            &format!("php_relaunch_failures_total{}", verdict("502"))
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &samples,
            &format!("php_relaunch_relaunches_total{}", result("healthy"))
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &samples,
            &format!("php_relaunch_restart_budget_remaining{target}")
        ),
        Some("0")
    );

    // Down again with the budget spent: it gives up.
    site.fpm.stop();
    let out = run();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        field(site.log_lines().last().unwrap(), "action"),
        Some("gave-up")
    );
    let samples = exporter.scrape();
    assert_eq!(
        sample(&samples, &format!("php_relaunch_gave_up{target}")),
        Some("1"),
        "{samples:?}"
    );
    assert_eq!(
        sample(
            &samples,
            &format!("php_relaunch_failures_total{}", verdict("502"))
        ),
        Some("2")
    );
    assert_eq!(sample(&samples, "node_textfile_scrape_error"), Some("0"));
}

#[test]
fn a_symlink_at_the_metrics_path_is_refused_and_the_run_goes_on() {
    let site = Site::start();
    let textfiles = shared_tempdir();
    let metrics = textfiles.path().join("php-relaunch.prom");
    let metrics_arg = metrics.display().to_string();
    let heartbeat = site.heartbeat();
    let run = || site.run(&heartbeat, "2", &["", "0", "--metrics-file", &metrics_arg]);
    // A symlink at the path is refused with one warning and left; the run goes on as usual.
    let elsewhere = textfiles.path().join("elsewhere");
    fs::write(&elsewhere, "keep\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, &metrics).unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("is a symlink: not written"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "keep\n");
    assert!(
        fs::symlink_metadata(&metrics)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn the_example_alerting_rules_name_the_metrics_that_exist() {
    let rules = fs::read_to_string(project().join("examples/alerts.yml")).unwrap();
    assert!(
        rules.starts_with("groups:") || rules.contains("\ngroups:"),
        "{rules}"
    );
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(
        alerts,
        [
            "PhpRelaunchSilent",
            "PhpRelaunchBudgetSpent",
            "PhpRelaunchManyRelaunches"
        ]
    );
    for metric in [
        "php_relaunch_last_check_timestamp_seconds",
        "php_relaunch_gave_up",
        "php_relaunch_relaunches_total",
    ] {
        assert!(rules.contains(metric), "{metric}");
    }
    assert_eq!(rules.matches("expr:").count(), 3);
}
