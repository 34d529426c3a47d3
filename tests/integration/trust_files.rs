//! Files root writes and reads (#18 items 4, 5, 9 and 11), with `www-data` as the attacker: a
//! planted link where `report --svg` writes, a racer swapping links where `hook --listen` binds, a
//! FIFO as the state file, and access logs with forged user names and a gzip bomb.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::{
    Nginx, Site, curl_status, free_port, php_relaunch, shared_tempdir, signal, stderr, stdout,
    wait_until_quietly,
};
use crate::pool_user::WWW_DATA;

/// `program args…` run as `www-data`, with no supplementary groups.
fn as_www_data(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=33",
        "--regid=33",
        "--clear-groups",
        "--inh-caps=-all",
        program,
    ]);
    cmd
}

/// A directory `www-data` owns and writes, as a docroot or `/run/php` is.
fn www_data_dir(parent: &Path, name: &str) -> std::path::PathBuf {
    let dir = parent.join(name);
    fs::create_dir(&dir).unwrap();
    rustix::fs::chown(
        &dir,
        Some(rustix::fs::Uid::from_raw(WWW_DATA)),
        Some(rustix::fs::Gid::from_raw(WWW_DATA)),
    )
    .unwrap();
    dir
}

/// A root-only file, and what it holds and how it is owned now.
fn victim(dir: &Path) -> (std::path::PathBuf, (String, u32, u32, u32)) {
    let path = dir.join("root-only");
    fs::write(&path, "precious\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let seen = seen(&path);
    (path, seen)
}

fn seen(path: &Path) -> (String, u32, u32, u32) {
    let meta = fs::symlink_metadata(path).unwrap();
    (
        fs::read_to_string(path).unwrap(),
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777,
    )
}

/// One line of php-relaunch's own log, so that `report` has something to read.
fn own_log(dir: &Path) -> std::path::PathBuf {
    let log = dir.join("php-relaunch.log");
    fs::write(
        &log,
        "2026-11-29T22:00:00+00:00 url=http://h/hb verdict=502 latency=0.001s action=restart \
         old_pid=1 new_pid=2 took=0.5s state=healthy mail=none trigger=cron events=0\n",
    )
    .unwrap();
    log
}

fn report(log: &Path, extra: &[&str]) -> Output {
    php_relaunch()
        .args([
            "report",
            "--since",
            "3d",
            "--until",
            "2026-11-30T12:00",
            "--log",
        ])
        .arg(log)
        .args(extra)
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

#[test]
fn item_4_report_svg_follows_no_link_and_writes_nowhere_others_can_write() {
    let dir = shared_tempdir();
    let log = own_log(dir.path());
    let (victim, before) = victim(dir.path());
    let docroot = www_data_dir(dir.path(), "docroot");
    // www-data plants a link to the root-only file, and a dangling one to where nothing is.
    let chart = docroot.join("chart.svg");
    let dangling = docroot.join("new.svg");
    let elsewhere = dir.path().join("created-by-root");
    for (target, link) in [(&victim, &chart), (&elsewhere, &dangling)] {
        let out = as_www_data("ln")
            .arg("-s")
            .arg(target)
            .arg(link)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }

    for link in [&chart, &dangling] {
        let out = report(&log, &["--svg", link.to_str().unwrap()]);

        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "php-relaunch: --svg '{}': refusing to write in '{}': it is owned by uid 33, \
                 not by root: choose a directory only root can write\n",
                link.display(),
                docroot.display()
            )
        );
        assert!(stdout(&out).is_empty());
    }
    assert_eq!(seen(&victim), before, "the root-only file is untouched");
    assert!(!elsewhere.exists(), "no file was created elsewhere");

    // In root's own directory, a link at the path is refused and left as it is ...
    let linked = dir.path().join("linked.svg");
    symlink(&victim, &linked).unwrap();
    let out = report(&log, &["--svg", linked.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "php-relaunch: --svg '{}' is a symlink: not written, left as it is\n",
            linked.display()
        )
    );
    assert_eq!(seen(&victim), before);
    // ... and a plain path gets the chart, readable by the web server.
    let plain = dir.path().join("chart.svg");
    let out = report(&log, &["--svg", plain.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fs::read_to_string(&plain).unwrap().contains("<svg"));
    let meta = fs::metadata(&plain).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644));
}

/// `www-data` swapping a link to `victim` in and out at `path`, `rounds` times, in a process of its
/// own.
fn racer(path: &Path, victim: &Path, rounds: u32) -> Child {
    as_www_data("/usr/bin/python3")
        .args([
            "-c",
            "import os, sys\n\
             path, victim, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])\n\
             for _ in range(rounds):\n\
             \x20   try:\n\
             \x20       os.unlink(path)\n\
             \x20   except OSError:\n\
             \x20       pass\n\
             \x20   try:\n\
             \x20       os.symlink(victim, path)\n\
             \x20   except OSError:\n\
             \x20       pass\n",
        ])
        .arg(path)
        .arg(victim)
        .arg(rounds.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts `hook --listen socket` and ends it: its exit code if it ended by itself within 10 s
/// (`None` if it ran and was stopped), and its stderr.
fn hook_once(site: &Site, socket: &Path) -> (Option<i32>, String) {
    let mut child = site
        .subcommand(
            &["hook", "--listen", socket.to_str().unwrap()],
            &site.heartbeat(),
            "2",
            &[""],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ended = wait_until_quietly(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !ended {
        signal(child.id(), rustix::process::Signal::TERM);
    }
    let out = child.wait_with_output().unwrap();
    (ended.then(|| out.status.code()).flatten(), stderr(&out))
}

#[test]
fn item_5_hook_listen_changes_no_root_file_whatever_www_data_swaps_in() {
    let site = Site::start();
    let (victim, before) = victim(site.dir.path());

    // In a directory www-data writes, --listen is refused, however the racer times its swaps.
    let run_php = www_data_dir(site.dir.path(), "run-php");
    let socket = run_php.join("hook.sock");
    let mut swapper = racer(&socket, &victim, 200_000);
    for _ in 0..20 {
        let (code, said) = hook_once(&site, &socket);
        assert_eq!(
            code,
            Some(2),
            "the hook listened in www-data's directory: {said}"
        );
        assert_eq!(
            said,
            format!(
                "php-relaunch: --listen '{}': refusing to write in '{}': it is owned by uid 33, \
                 not by root: choose a directory only root can write\n",
                socket.display(),
                run_php.display()
            )
        );
    }
    let _ = swapper.kill();
    let _ = swapper.wait();
    assert_eq!(seen(&victim), before, "a root file changed owner or mode");

    // In a sticky directory (as /tmp is), the socket is bound, made root:www-data 0660 and moved
    // into place, while the racer tries its swaps all the same.
    let sticky = site.dir.path().join("sticky");
    fs::create_dir(&sticky).unwrap();
    fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).unwrap();
    let socket = sticky.join("hook.sock");
    let mut swapper = racer(&socket, &victim, 20_000);
    let (code, said) = hook_once(&site, &socket);
    let _ = swapper.kill();
    let _ = swapper.wait();
    assert_eq!(seen(&victim), before, "a root file changed owner or mode");
    // The racer's link may have taken the name first (bind never follows it), or the hook ran.
    assert!(
        code.is_none() || said.contains("exists and is not a socket"),
        "{said}"
    );
    let _ = fs::remove_file(&socket);
    let mut hook = site
        .subcommand(
            &["hook", "--listen", socket.to_str().unwrap()],
            &site.heartbeat(),
            "2",
            &[""],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until_quietly(Duration::from_secs(10), || socket.exists()));
    let meta = fs::symlink_metadata(&socket).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, WWW_DATA, 0o660)
    );
    // Nothing is left in the directory but the socket: the temporary name was renamed over it.
    let names: Vec<String> = fs::read_dir(&sticky)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["hook.sock"]);
    signal(hook.id(), rustix::process::Signal::TERM);
    let _ = hook.wait();
}

/// Runs `cmd`, killing it if it has not finished within `limit`: a hang fails the test instead of
/// holding it.
fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ended = wait_until_quietly(limit, || matches!(child.try_wait(), Ok(Some(_))));
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "php-relaunch hung and was killed: {}", stderr(&out));
    out
}

#[test]
fn item_9_a_fifo_as_state_file_neither_hangs_the_run_nor_keeps_the_lock() {
    let site = Site::start();
    assert!(
        Command::new("mkfifo")
            .arg(&site.state)
            .status()
            .unwrap()
            .success()
    );
    for _ in 0..2 {
        let out = run_within(
            site.command(&site.heartbeat(), "2", &[]),
            Duration::from_secs(30),
        );

        // Healthy, and said once on stderr; never 5 (the lock held by a hung run).
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "php-relaunch: cannot read state file '{}': not a regular file; using a fresh state\n",
                site.state.display()
            )
        );
    }
    let meta = fs::symlink_metadata(&site.state).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()),
        "the FIFO is left as it is"
    );
}

/// An nginx whose every request ends in a 502 (its upstream socket does not exist), logging in
/// nginx's `combined` format to `dir/access.log`.
fn bad_gateway_nginx(dir: &Path) -> Nginx {
    let port = free_port();
    let config = format!(
        "user www-data;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {dir}/access.log combined;\n  server {{\n    listen 127.0.0.1:{port};\n\
         \x20   location / {{ fastcgi_pass unix:{dir}/no-such.sock; }}\n  }}\n}}\n",
        dir = dir.display(),
    );
    let nginx = Nginx::custom(dir, port, &config);
    nginx.start();
    nginx
}

/// `report --json` over the last day of `log` and `access` (and its rotated copies).
fn access_report(log: &Path, access: &Path) -> Output {
    let mut cmd = php_relaunch();
    cmd.args(["report", "--json", "--since", "1d", "--log"])
        .arg(log)
        .arg("--access-log")
        .arg(access);
    run_within(cmd, Duration::from_mins(2))
}

#[test]
fn item_11_access_log_502s_cannot_be_hidden_by_a_user_name_nor_flooded_by_a_gzip_bomb() {
    let dir = shared_tempdir();
    let log = own_log(dir.path());
    let nginx = bad_gateway_nginx(dir.path());
    // Basic-auth user names shaped to push nginx's time field out of place.
    for user in ["[evil", "[29/Nov/2026:22:00:00 +0000]", "a] \\\"x", "plain"] {
        let status = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-m",
                "5",
                "--noproxy",
                "*",
                "-w",
                "%{http_code}",
            ])
            .arg("-u")
            .arg(format!("{user}:pw"))
            .arg(nginx.url("x.php"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&status.stdout), "502");
    }
    assert_eq!(curl_status(&nginx.url("y.php")), "502");
    nginx.stop();
    let access = dir.path().join("access.log");
    let text = fs::read_to_string(&access).unwrap();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains("- [evil ["), "{text}");

    // Each of those 502s is counted, none skipped.
    let out = access_report(&log, &access);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&json["totals"]["visitor_502"], &json["skipped"]),
        (&serde_json::json!(5), &serde_json::json!(0)),
        "{}",
        stdout(&out)
    );
    assert_eq!(json["owned_by_others"], serde_json::json!([]));

    // www-data owns the rotated copies on Debian: it plants a bomb, a megabyte or so of gzip that
    // unpacks to about a gigabyte of forged 502 lines.
    let bomb = dir.path().join("access.log.1.gz");
    let when = &text[text.find("] \"").unwrap() - 26..text.find("] \"").unwrap()];
    let forged = format!("6.6.6.6 - - [{when}] \"GET / HTTP/1.1\" 502 0 \"-\" \"-\"\n");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&bomb).unwrap(),
        flate2::Compression::best(),
    );
    let block = forged.repeat(16_384);
    let blocks = (1 << 30) / block.len();
    let lines_in_bomb = u64::try_from(blocks * 16_384).unwrap();
    for _ in 0..blocks {
        gz.write_all(block.as_bytes()).unwrap();
    }
    gz.finish().unwrap();
    rustix::fs::chown(
        &bomb,
        Some(rustix::fs::Uid::from_raw(WWW_DATA)),
        Some(rustix::fs::Gid::from_raw(WWW_DATA)),
    )
    .unwrap();
    let compressed = fs::metadata(&bomb).unwrap().len();
    assert!(compressed < 4 << 20, "{compressed} bytes");

    let out = access_report(&log, &access);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The bomb is read no further than a bound, and the report says so, and whose files it read.
    let cut = json["cut"].as_array().unwrap();
    assert_eq!(cut.len(), 1, "{}", stdout(&out));
    assert_eq!(cut[0]["file"], bomb.display().to_string());
    assert_eq!(json["owned_by_others"], serde_json::json!([bomb]));
    let counted = json["totals"]["visitor_502"].as_u64().unwrap();
    assert!(
        counted < 5 + lines_in_bomb,
        "every forged line was counted: {counted}"
    );
}
