//! The files beside the code: nginx accepts and serves the heartbeat vhost, mcron accepts the job.

use std::fs;
use std::process::Command;

use crate::common::{Site, project, shared_tempdir, stderr, stdout};

#[test]
fn nginx_accepts_the_heartbeat_files_unchanged() {
    let dir = shared_tempdir();
    fs::copy(
        "/etc/nginx/fastcgi_params",
        dir.path().join("fastcgi_params"),
    )
    .unwrap();
    let conf = dir.path().join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "pid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{}}\n\
             http {{\n  include {nginx}/heartbeat-allow.conf;\n  include {nginx}/heartbeat.conf;\n}}\n",
            dir = dir.path().display(),
            nginx = project().join("nginx").display(),
        ),
    )
    .unwrap();

    let out = Command::new("/usr/sbin/nginx")
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();

    assert!(out.status.success(), "nginx -t: {}", stderr(&out));
    assert!(
        stderr(&out).contains("test is successful"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn nginx_serves_the_heartbeat_page_to_loopback_only() {
    let site = Site::start();

    let page = Command::new("curl")
        .args(["-s", "--noproxy", "*", "-m", "5"])
        .arg(site.heartbeat())
        .output()
        .unwrap();
    let body = stdout(&page);
    // Debian's fastcgi_params passes HTTP_HOST as nginx's $host, without the port.
    assert!(body.contains("HTTP_HOST: 127.0.0.1\n"), "{body}");
    assert!(body.contains("SERVER_ADDR: 127.0.0.1"), "{body}");

    // 127.0.0.2 is loopback but not on the allow-list: the connection is closed without an answer.
    let stranger = Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "*",
            "-m",
            "5",
            "--interface",
            "127.0.0.2",
            "-w",
            "%{http_code}",
        ])
        .arg(site.heartbeat())
        .output()
        .unwrap();
    assert_eq!(
        stranger.status.code(),
        Some(52),
        "curl: empty reply expected"
    );
    assert_eq!(stdout(&stranger), "000");

    // Only the heartbeat location is served.
    let other = Command::new("curl")
        .args(["-s", "--noproxy", "*", "-m", "5", "-w", "%{http_code}"])
        .arg(site.nginx.url("index.html"))
        .output()
        .unwrap();
    assert_eq!(stdout(&other), "000");
}

#[test]
fn mcron_runs_the_job_every_ten_seconds() {
    let out = Command::new("mcron")
        .arg("--schedule=7")
        .arg(project().join("mcron/job.guile"))
        .env("GUILE_AUTO_COMPILE", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "mcron: {}", stderr(&out));

    // Each entry: a date line ("Mon Nov 23 17:41:40 2026 +0000"), then the job's display line.
    let text = stdout(&out);
    let times: Vec<u32> = text
        .lines()
        .filter_map(|line| {
            let clock = line
                .split(' ')
                .find(|w| w.len() == 8 && w.matches(':').count() == 2)?;
            let mut parts = clock.split(':').map(|p| p.parse::<u32>().unwrap());
            let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
            Some(h * 3600 + m * 60 + s)
        })
        .collect();
    assert_eq!(times.len(), 7, "{text}");
    for pair in times.windows(2) {
        assert_eq!((pair[1] + 86_400 - pair[0]) % 86_400, 10, "{text}");
    }
    assert!(times.iter().all(|t| t % 10 == 0), "{text}");
    assert_eq!(
        text.matches("php-relaunch http://127.0.0.1:8889/php-heartbeat.php 5")
            .count(),
        7
    );
}

#[test]
fn crontab_example_runs_the_binary_by_full_path_with_the_classic_arguments() {
    let text = fs::read_to_string(project().join("crontab.example")).unwrap();
    let jobs: Vec<&str> = text
        .lines()
        .map(|l| l.trim_start_matches("# "))
        .filter(|l| l.starts_with("* * * * * "))
        .collect();
    assert_eq!(jobs.len(), 2, "{text}");
    assert!(
        jobs[0].starts_with("* * * * * /usr/sbin/php-relaunch http://"),
        "{}",
        jobs[0]
    );
    assert!(
        jobs[1].starts_with("* * * * * pgrep -x mcron >/dev/null || /usr/sbin/php-relaunch "),
        "{}",
        jobs[1]
    );
    assert!(jobs[1].contains(" --every 10 "), "{}", jobs[1]);
    // Whatever the crontab says must parse: run its arguments through the real binary's --dry-run
    // against a closed port, which classifies as web server down (exit 4), never as bad input (2).
    // `--every 10` is checked once above and left out here, or the run would last the minute.
    for job in jobs {
        let job = job.replace(" --every 10", "");
        let args: Vec<String> = job
            .split("/usr/sbin/php-relaunch ")
            .nth(1)
            .unwrap()
            .split(" >/dev/null")
            .next()
            .unwrap()
            .split(' ')
            .map(|a| a.trim_matches('\'').to_owned())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let port = crate::common::free_port().to_string();
        let out = crate::common::php_relaunch()
            .args(args.iter().map(|a| a.replace("8889", &port)))
            .args(["--dry-run", "--service", "php8.2-fpm", "--state"])
            .arg(dir.path().join("state.json"))
            .arg("--lock")
            .arg(dir.path().join("lock"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", stderr(&out));
    }
}
