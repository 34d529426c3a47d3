//! php-relaunch called as `php-fpm-healthcheck` (#22): the upstream project's own test suite
//! (renatomefi/php-fpm-healthcheck master a2d45de, `test/testinfra/*.py`, and `test_timeout.py` of its
//! PR #55), translated to run against a private php-fpm on loopback instead of a `php:*-fpm`
//! container, plus the cases where the drop-in is better than the original.
//!
//! The container's `localhost:9000` becomes the private instance's address through FCGI_CONNECT;
//! `kill -USR2 1` (reload) becomes a fresh instance per test; the binary is run through a symlink
//! named php-fpm-healthcheck in the test's temporary directory.
//!
//! | upstream case                                          | here                                   |
//! | ------------------------------------------------------ | -------------------------------------- |
//! | command: script_is_available, script_is_executable     | `the_name_runs_through_a_link_or_copy` |
//! | execution: invalid_option_exits_properly               | `invalid_options_are_getopts_errors`   |
//! | execution: valid_with_empty_value_exits_properly       | `values_must_be_integers`              |
//! | execution: valid_with_non_integer_value_exits_properly | `values_must_be_integers`              |
//! | execution: all_available_options_at_once              | `all_options_at_once`                  |
//! | execution: all_available_options (9 parametrized)     | `each_option_verbose`                  |
//! | execution: missing_fcgi_apk / missing_fcgi_apt         | `works_without_cgi_fcgi_or_any_program`|
//! | fpm: exit_when_no_status_page_is_configured            | `no_status_page_configured_is_8`       |
//! | fpm: fpm_on_socket                                     | `unix_socket_absolute_and_relative`    |
//! | fpm: fpm_on_socket_with_huge_env                       | `huge_environment`                     |
//! | fpm: default_status_page_path                          | `default_address_and_status_path`      |
//! | fpm: exit_when_fpm_is_invalid_path                     | `invalid_status_path_is_8`             |
//! | fpm: exit_when_fpm_is_not_reachable_apk/_apt           | `refused_is_111`                       |
//! | fpm: exit_when_fpm_is_invalid_host_apk/_apt            | `no_such_socket_is_2`                  |
//! | metrics: metric_fail_accepted_conn (+ with_other)      | `accepted_conn_over_threshold`         |
//! | metrics: metric_accepted_conn                          | `verbose_prints_the_page`              |
//! | metrics: listen_queue_len_and_listen_queue_vars_...    | `listen_queue_names_are_told_apart`    |
//! | ping: ping                                             | `quiet_when_healthy`                   |
//! | ping: ping_verbose                                     | `verbose_prints_the_page`              |
//! | timeout (PR #55): timeout_success                      | `timeout_option`                       |
//! | timeout: timeout_without_value (both of that name)     | `timeout_option`                       |
//! | timeout: timeout_invalid_value                         | `timeout_option`                       |
//! | timeout: timeout_not_found                             | `works_without_cgi_fcgi_or_any_program`|
//! | timeout: timeout_sleep (124 or 129)                    | `slow_script_ends_at_the_deadline`     |
//!
//! Beyond upstream: a listener that accepts and never answers, a 403 `Access denied.`, an empty or
//! foreign page, a missing metric, and `--ping`.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;

use crate::common::{Fpm, free_port, shared_tempdir, stderr, stdout};

/// A private php-fpm (status and ping pages on) with a directory of scripts, and the link.
struct Setup {
    fpm: Fpm,
    dir: tempfile::TempDir,
    link: PathBuf,
}

impl Setup {
    fn tcp() -> Setup {
        Setup::start(true)
    }

    fn start(tcp: bool) -> Setup {
        let dir = shared_tempdir();
        let fpm = if tcp {
            Fpm::new_tcp(dir.path())
        } else {
            Fpm::new(dir.path())
        };
        fpm.start();
        let link = link_in(dir.path());
        Setup { fpm, dir, link }
    }

    /// FCGI_CONNECT for this instance, as users write it.
    fn connect(&self) -> String {
        match self.fpm.port {
            Some(port) => format!("127.0.0.1:{port}"),
            None => self.fpm.socket.display().to_string(),
        }
    }

    /// The command with FCGI_CONNECT pointing at this instance.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = healthcheck(&self.link, args);
        cmd.env("FCGI_CONNECT", self.connect());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// A PHP script in the instance's reach; returns its absolute path.
    fn script(&self, name: &str, code: &str) -> String {
        let path = self.dir.path().join(name);
        fs::write(&path, code).unwrap();
        path.display().to_string()
    }
}

/// A symlink named php-fpm-healthcheck to the binary under test, in `dir`.
fn link_in(dir: &Path) -> PathBuf {
    let link = dir.join("php-fpm-healthcheck");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_php-relaunch"), &link).unwrap();
    link
}

/// The command as a probe line runs it, with none of the variables it reads set.
fn healthcheck(program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for var in [
        "RUST_BACKTRACE",
        "FCGI_CONNECT",
        "FCGI_STATUS_PATH",
        "FCGI_PING_PATH",
        "FCGI_PING_RESPONSE",
        "POSIXLY_CORRECT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

#[test]
fn the_name_runs_through_a_link_or_copy() {
    let s = Setup::tcp();
    // The link resolves to an executable file.
    let target = fs::canonicalize(&s.link).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&target).unwrap().permissions());
    assert_eq!(mode & 0o111, 0o111);
    let out = s.run(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!((stdout(&out), stderr(&out)), (String::new(), String::new()));
    // A copy of the binary under that name works the same.
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("php-fpm-healthcheck");
    fs::copy(env!("CARGO_BIN_EXE_php-relaunch"), &copy).unwrap();
    let mut cmd = healthcheck(&copy, &["-v"]);
    let out = cmd.env("FCGI_CONNECT", s.connect()).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("pool:"), "{}", stdout(&out));
}

#[test]
fn invalid_options_are_getopts_errors() {
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(dir.path());
    for (args, says) in [
        (
            &["--invalid-option"][..],
            "php-fpm-healthcheck: unrecognized option '--invalid-option'\n",
        ),
        (
            &["--invalid-option="],
            "php-fpm-healthcheck: unrecognized option '--invalid-option='\n",
        ),
        (
            &["--listen=3"],
            "php-fpm-healthcheck: option '--listen=3' is ambiguous; possibilities: '--listen-queue' '--listen-queue-len'\n",
        ),
        (
            &["-vx", "--verbose=1"],
            "php-fpm-healthcheck: invalid option -- 'x'\nphp-fpm-healthcheck: option '--verbose' doesn't allow an argument\n",
        ),
    ] {
        let out = healthcheck(&link, args).output().unwrap();
        assert_eq!(code(&out), 3, "{args:?}");
        assert_eq!(
            stderr(&out),
            format!("{says}Invalid options, terminating.\n"),
            "{args:?}"
        );
        assert_eq!(stdout(&out), "");
    }
}

#[test]
fn values_must_be_integers() {
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(dir.path());
    for (args, says) in [
        (
            &["--listen-queue-len="][..],
            "'--listen-queue-len' option value must be an integer, '' given\n",
        ),
        (
            &["--listen-queue-len=abc"],
            "'--listen-queue-len' option value must be an integer, 'abc' given\n",
        ),
        // An abbreviation is reported by its full name, as getopt hands it to the script.
        (
            &["--slow", "1x"],
            "'--slow-requests' option value must be an integer, '1x' given\n",
        ),
    ] {
        // Checked before connecting: nothing listens at the default address in this test.
        let out = healthcheck(&link, args).output().unwrap();
        assert_eq!(code(&out), 3, "{args:?}");
        assert_eq!(stderr(&out), says, "{args:?}");
    }
}

#[test]
fn all_options_at_once() {
    let s = Setup::tcp();
    // `listen queue len` is the backlog: 511 in upstream's containers, the kernel's somaxconn (4096)
    // here unless set.
    s.fpm.reconfigure("listen.backlog = 511\n");
    let out = s.run(&[
        "--accepted-conn=1000",
        "--listen-queue=1000",
        "--max-listen-queue=1000",
        "--listen-queue-len=1000",
        "--idle-processes=1000",
        "--active-processes=1000",
        "--total-processes=1000",
        "--max-active-processes=1000",
        "--max-children-reached=1000",
        "--slow-requests=1000",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn each_option_verbose() {
    let s = Setup::tcp();
    for option in [
        "--accepted-conn",
        "--listen-queue",
        "--max-listen-queue",
        "--idle-processes",
        "--active-processes",
        "--total-processes",
        "--max-active-processes",
        "--max-children-reached",
        "--slow-requests",
    ] {
        let out = s.run(&["--verbose", &format!("{option}=1000")]);
        assert_eq!(code(&out), 0, "{option}: {}", stderr(&out));
        let name = option.trim_start_matches("--").replace('-', " ");
        assert!(
            stdout(&out).contains(&format!("'{name}' value '")),
            "{option}: {}",
            stdout(&out)
        );
        assert!(stdout(&out).contains("and expected is less than '1000'"));
    }
    // GNU getopt's other spellings: `--METRIC N` and unambiguous abbreviations.
    let out = s.run(&["--total-processes", "1000", "--idle", "1000", "-v"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("'total processes' value '2' and expected is less than '1000'"));
    assert!(stdout(&out).contains("'idle processes' value '"));
}

#[test]
fn works_without_cgi_fcgi_or_any_program() {
    let s = Setup::tcp();
    for args in [&[][..], &["--timeout=1"]] {
        let out = s.cmd(args).env("PATH", "").output().unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "");
    }
}

#[test]
fn no_status_page_configured_is_8() {
    let s = Setup::tcp();
    let conf = fs::read_to_string(&s.fpm.config).unwrap();
    fs::write(
        &s.fpm.config,
        conf.replace("pm.status_path = /status\n", ""),
    )
    .unwrap();
    s.fpm.stop();
    s.fpm.start();
    let out = s.run(&["-v"]);
    assert_eq!(code(&out), 8);
    assert!(stdout(&out).contains("Trying to connect to php-fpm via:"));
    assert!(stdout(&out).contains("status output:\nFile not found.\n"));
    assert!(stderr(&out).starts_with("php-fpm status page non reachable\n"));
}

#[test]
fn unix_socket_absolute_and_relative() {
    let s = Setup::start(false);
    let out = s.run(&["-v"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(&format!(
        "Trying to connect to php-fpm via: {}/status\nphp-fpm status output:\npool:",
        s.fpm.socket.display()
    )));
    // A relative path, as cgi-fcgi takes it: from the current directory.
    let out = s
        .cmd(&["-v"])
        .env("FCGI_CONNECT", "php-fpm.sock")
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("via: php-fpm.sock/status\n"));
    assert!(stdout(&out).contains("pool:"));
}

#[test]
fn huge_environment() {
    let s = Setup::tcp();
    let out = s
        .cmd(&["-v"])
        .env("HUGE_ENV", " ".repeat(8192))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("Trying to connect to php-fpm via:"));
    assert!(stdout(&out).contains("status output:"));
    assert!(stdout(&out).contains("pool:"));
}

#[test]
fn default_address_and_status_path() {
    let s = Setup::tcp();
    // FCGI_CONNECT unset: localhost:9000, which is not ours to start php-fpm on; the line is what counts.
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(dir.path());
    let out = healthcheck(&link, &["-v"]).output().unwrap();
    assert!(
        stdout(&out).starts_with("Trying to connect to php-fpm via: localhost:9000/status\n"),
        "{}",
        stdout(&out)
    );
    // An empty variable means the default too, as `${FCGI_STATUS_PATH:-/status}` does.
    let out = s.cmd(&["-v"]).env("FCGI_STATUS_PATH", "").output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).starts_with(&format!(
        "Trying to connect to php-fpm via: {}/status\n",
        s.connect()
    )));
}

#[test]
fn invalid_status_path_is_8() {
    let s = Setup::tcp();
    let out = s
        .cmd(&["-v"])
        .env("FCGI_STATUS_PATH", "/invalid")
        .output()
        .unwrap();
    assert_eq!(code(&out), 8);
    assert!(stdout(&out).contains(&format!(
        "Trying to connect to php-fpm via: {}/invalid",
        s.connect()
    )));
    assert!(stdout(&out).contains("File not found."));
    assert!(stderr(&out).starts_with("php-fpm status page non reachable\n"));
}

#[test]
fn refused_is_111() {
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(dir.path());
    let address = format!("localhost:{}", free_port());
    let out = healthcheck(&link, &["-v"])
        .env("FCGI_CONNECT", &address)
        .output()
        .unwrap();
    assert_eq!(code(&out), 111);
    assert!(stdout(&out).contains(&format!("Trying to connect to php-fpm via: {address}")));
    assert_eq!(
        stderr(&out),
        format!(
            "php-fpm-healthcheck: cannot connect to php-fpm via {address}: connection refused\n"
        )
    );
}

#[test]
fn no_such_socket_is_2() {
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(dir.path());
    let out = healthcheck(&link, &["-v"])
        .env("FCGI_CONNECT", "abc")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stdout(&out).contains("Trying to connect to php-fpm via: abc"));
    assert_eq!(
        stderr(&out),
        "php-fpm-healthcheck: cannot connect to php-fpm via abc: no such socket\n"
    );
}

#[test]
fn accepted_conn_over_threshold() {
    let s = Setup::tcp();
    // A fresh instance: this request is its first.
    let out = s.run(&["--accepted-conn=0"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "'accepted conn' value '1' is greater than expected '0'\n"
    );
    assert_eq!(stdout(&out), "");
    // Checked in the order given; the first failure ends the run.
    let out = s.run(&[
        "--verbose",
        "--listen-queue=10",
        "--max-active-processes=10",
        "--accepted-conn=0",
        "--slow-requests=-1",
    ]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        "'accepted conn' value '2' is greater than expected '0'\n"
    );
    assert!(stdout(&out).contains("'listen queue' value"));
    assert!(stdout(&out).contains("'max active processes' value"));
    assert!(!stdout(&out).contains("'slow requests'"));
}

#[test]
fn verbose_prints_the_page() {
    let s = Setup::tcp();
    let out = s.run(&["-v"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("Trying to connect to php-fpm via:"));
    assert!(stdout(&out).contains("status output:"));
    assert!(stdout(&out).contains("pool:"));
    assert_eq!(stderr(&out), "");
}

#[test]
fn quiet_when_healthy() {
    let s = Setup::tcp();
    // Positional arguments are ignored, wherever they stand.
    let out = s.run(&["ignored", "--", "--not-an-option"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!((stdout(&out), stderr(&out)), (String::new(), String::new()));
}

#[test]
fn listen_queue_names_are_told_apart() {
    let s = Setup::tcp();
    let out = s.run(&["--verbose", "--listen-queue=5", "--max-listen-queue=1024"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("Trying to connect to php-fpm via:"));
    assert!(stdout(&out).contains("'listen queue' value '0' and expected is less than '5'"));
    assert!(stdout(&out).contains("'max listen queue' value '0' and expected is less than '1024'"));
    // `listen queue len` is the backlog's size, not to be mistaken for `listen queue`.
    let out = s.run(&["--listen-queue-len=0"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).starts_with("'listen queue len' value '"));
}

#[test]
fn timeout_option() {
    let s = Setup::tcp();
    let out = s.run(&["--timeout=1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = s.run(&["--timeout"]);
    assert_eq!(code(&out), 3);
    assert_eq!(
        stderr(&out),
        "php-fpm-healthcheck: option '--timeout' requires an argument\nInvalid options, terminating.\n"
    );
    for value in ["", "abc"] {
        let out = s.run(&[&format!("--timeout={value}")]);
        assert_eq!(code(&out), 3);
        assert_eq!(
            stderr(&out),
            format!("'--timeout' option value must be an integer, '{value}' given\n")
        );
    }
    let out = s.run(&["--timeout=0"]);
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("'--timeout' option value must be"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn slow_script_ends_at_the_deadline() {
    let s = Setup::tcp();
    let sleep = s.script("sleep.php", "<?php sleep(2);\n");
    let out = s
        .cmd(&["--timeout=1"])
        .env("FCGI_STATUS_PATH", &sleep)
        .output()
        .unwrap();
    assert_eq!(code(&out), 124);
    assert_eq!(
        stderr(&out),
        format!(
            "php-fpm-healthcheck: php-fpm did not answer via {}{sleep} within 1 s\n",
            s.connect()
        )
    );
}

#[test]
fn a_listener_that_never_answers_ends_at_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    // Accepts every connection and holds it, reading nothing, answering nothing.
    thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let link = link_in(dir.path());
    for (args, seconds) in [(&["--timeout=1"][..], 1), (&[][..], 5)] {
        let out = healthcheck(&link, args)
            .env("FCGI_CONNECT", &address)
            .output()
            .unwrap();
        assert_eq!(code(&out), 124, "{args:?}");
        assert_eq!(
            stderr(&out),
            format!(
                "php-fpm-healthcheck: php-fpm did not answer via {address}/status within {seconds} s\n"
            )
        );
    }
}

#[test]
fn unexpected_pages_fail() {
    let s = Setup::tcp();
    let empty = s.script("empty.php", "<?php\n");
    let hello = s.script("hello.php", "<?php echo 'hello';\n");
    // php-fpm runs only .php files (security.limit_extensions): anything else is `Access denied.`
    let denied = s.script("status.txt", "pool: www\n");
    for (path, reason) in [
        (denied.as_str(), "php-fpm answered 403: Access denied."),
        (&empty, "the page is empty"),
        (&hello, "not a php-fpm status page: hello"),
    ] {
        let out = s.cmd(&[]).env("FCGI_STATUS_PATH", path).output().unwrap();
        assert_eq!(code(&out), 8, "{path}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!("php-fpm status page non reachable\nphp-fpm-healthcheck: {reason}\n"),
            "{path}"
        );
    }
}

#[test]
fn a_missing_metric_fails() {
    let s = Setup::tcp();
    let page = s.script(
        "fake-status.php",
        "<?php echo \"pool: www\\nprocess manager: static\\naccepted conn: 1\\n\";\n",
    );
    let out = s
        .cmd(&["--accepted-conn=5", "--slow-requests=5"])
        .env("FCGI_STATUS_PATH", &page)
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(stderr(&out), "'slow requests' is not on the status page\n");
}

#[test]
fn ping() {
    let s = Setup::tcp();
    let out = s.run(&["--ping"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!((stdout(&out), stderr(&out)), (String::new(), String::new()));
    let out = s.run(&["--ping", "-v"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "Trying to connect to php-fpm via: {}/ping\nphp-fpm ping output:\npong\n",
            s.connect()
        )
    );
    // Another path that php-fpm does not serve, and another expected answer.
    let out = s
        .cmd(&["--ping"])
        .env("FCGI_PING_PATH", "/nope")
        .output()
        .unwrap();
    assert_eq!(code(&out), 8);
    assert_eq!(
        stderr(&out),
        "php-fpm ping page non reachable\nphp-fpm-healthcheck: php-fpm answered 404: File not found.\n"
    );
    let out = s
        .cmd(&["--ping"])
        .env("FCGI_PING_RESPONSE", "ok")
        .output()
        .unwrap();
    assert_eq!(code(&out), 8);
    assert_eq!(
        stderr(&out),
        "php-fpm ping page non reachable\nphp-fpm-healthcheck: the page says 'pong', not 'ok'\n"
    );
    // The ping page has no metrics.
    let out = s.run(&["--ping", "--accepted-conn=5"]);
    assert_eq!(code(&out), 3);
    assert_eq!(
        stderr(&out),
        "'--ping' checks the ping page, which has no metrics: drop '--accepted-conn' or '--ping'\n"
    );
}
