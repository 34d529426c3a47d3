//! `php-relaunch hook` (#9) against a real nginx that reports its 502s and 504s through the shipped
//! nginx/hook.conf, a private php-fpm, the real Apache with the shipped apache/hook.conf lines, and
//! systemd's own `systemd-socket-activate` handing over the socket exactly as systemd does.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Nginx, Site, alive, curl_status, field, free_port, project, signal, stderr, wait_until,
    wait_until_quietly,
};

/// A private php-fpm, its heartbeat vhost (access_log off, as shipped), and a front nginx serving
/// PHP pages whose 502s and 504s go to `socket` through the shipped nginx/hook.conf.
struct HookSite {
    site: Site,
    front: Nginx,
    socket: PathBuf,
}

impl HookSite {
    fn start() -> HookSite {
        let site = Site::start();
        let dir = site.dir.path();
        let www = dir.join("www");
        fs::write(www.join("hello.php"), "<?php echo 'hello';\n").unwrap();
        fs::write(
            www.join("bad-gateway.php"),
            "<?php http_response_code(502); echo 'a 502 of its own';\n",
        )
        .unwrap();
        let front_dir = dir.join("front");
        fs::create_dir(&front_dir).unwrap();
        let socket = dir.join("hook.sock");
        let hook_conf = fs::read_to_string(project().join("nginx/hook.conf"))
            .unwrap()
            .replace("/run/php-relaunch/hook.sock", &socket.display().to_string());
        fs::write(front_dir.join("hook.conf"), hook_conf).unwrap();
        fs::copy(
            "/etc/nginx/fastcgi_params",
            front_dir.join("fastcgi_params"),
        )
        .unwrap();
        let port = free_port();
        let config = format!(
            "user www-data;\nworker_processes 1;\npid {front}/nginx.pid;\nerror_log {front}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  include {front}/hook.conf;\n  server {{\n    listen 127.0.0.1:{port};\n    root {www};\n\
             \x20   location ~ \\.php$ {{\n      include {front}/fastcgi_params;\n\
             \x20     fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
             \x20     fastcgi_pass unix:{sock};\n    }}\n  }}\n}}\n",
            front = front_dir.display(),
            www = www.display(),
            sock = site.fpm.socket.display(),
        );
        let front = Nginx::custom(&front_dir, port, &config);
        front.start();
        HookSite {
            site,
            front,
            socket,
        }
    }

    fn page(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.front.port)
    }

    /// `php-relaunch hook WORDS… HEARTBEAT 2 ''` on this site's php-fpm, log, lock and state.
    fn hook_command(&self, words: &[&str]) -> Command {
        let mut words = words.to_vec();
        words.insert(0, "hook");
        let mut cmd = self
            .site
            .subcommand(&words, &self.site.heartbeat(), "2", &[""]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    }

    /// The hook's log lines.
    fn hook_lines(&self) -> Vec<String> {
        self.site
            .log_lines()
            .into_iter()
            .filter(|l| field(l, "trigger") == Some("hook"))
            .collect()
    }

    fn wait_for_hook_lines(&self, n: usize) -> Vec<String> {
        wait_until("the hook's log line", Duration::from_secs(20), || {
            self.hook_lines().len() >= n
        });
        self.hook_lines()
    }
}

/// A running hook, ended (SIGTERM, then SIGKILL) when dropped.
struct Hook {
    child: Child,
}

impl Hook {
    fn spawn(mut cmd: Command) -> Hook {
        Hook {
            child: cmd.spawn().unwrap(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks it to stop; its exit code and what it said on stderr.
    fn stop(mut self) -> (Option<i32>, String) {
        signal(self.pid(), rustix::process::Signal::TERM);
        self.finish()
    }

    /// Waits for it to end by itself (within 20 s); its exit code and stderr.
    fn finish(&mut self) -> (Option<i32>, String) {
        let pid = self.pid();
        wait_until("the hook to exit", Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        let code = self.child.wait().unwrap().code();
        let mut said = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut said);
        }
        assert!(!alive(pid));
        (code, said)
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), rustix::process::Signal::TERM);
            if !wait_until_quietly(Duration::from_secs(10), || {
                matches!(self.child.try_wait(), Ok(Some(_)))
            }) {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        // A failed test shows what the hook said.
        if thread::panicking()
            && let Some(mut err) = self.child.stderr.take()
        {
            let mut said = String::new();
            let _ = err.read_to_string(&mut said);
            eprintln!("the hook said on stderr:\n{said}");
        }
    }
}

/// One GET over a fresh connection; the status, or 0.
fn status_of(port: u16, path: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut head = [0; 12];
    match stream.read_exact(&mut head) {
        Ok(()) => std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Makes `socket` what the shipped .socket unit makes it: 0660 root:www-data.
fn as_the_unit_makes_it(socket: &Path) {
    wait_until("the socket", Duration::from_secs(10), || socket.exists());
    let www_data = rustix::fs::Gid::from_raw(33);
    rustix::fs::chown(socket, None, Some(www_data)).unwrap();
    fs::set_permissions(socket, fs::Permissions::from_mode(0o660)).unwrap();
}

/// php-fpm down, one page request gets 502, the hook relaunches, the next request gets 200.
fn relaunched_by_the_first_502(site: &HookSite) -> String {
    site.site.fpm.stop();
    assert_eq!(curl_status(&site.page("hello.php")), "502");
    let line = site.wait_for_hook_lines(1).remove(0);
    assert_eq!(field(&line, "state"), Some("healthy"), "{line}");
    assert_eq!(field(&line, "action"), Some("start"), "{line}");
    assert_eq!(curl_status(&site.page("hello.php")), "200");
    line
}

#[test]
fn under_socket_activation_the_first_502_relaunches_php_fpm() {
    let site = HookSite::start();
    let mut words = vec![
        "--datagram".to_owned(),
        "-l".to_owned(),
        site.socket.display().to_string(),
        env!("CARGO_BIN_EXE_php-relaunch").to_owned(),
    ];
    let hook = site.hook_command(&["--idle-exit", "2s"]);
    words.extend(hook.get_args().map(|a| a.to_string_lossy().into_owned()));
    let mut activate = Command::new("systemd-socket-activate");
    activate
        .args(&words)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut hook = Hook::spawn(activate);
    as_the_unit_makes_it(&site.socket);

    let line = relaunched_by_the_first_502(&site);
    assert!(field(&line, "events").is_some_and(|n| n != "0"), "{line}");

    // Silent for --idle-exit: it exits 0, so that systemd re-arms the socket.
    let (code, said) = hook.finish();
    assert_eq!(code, Some(0), "{said}");
}

#[test]
fn with_listen_the_first_502_relaunches_php_fpm_and_the_socket_is_only_nginxs() {
    let site = HookSite::start();
    let socket = site.socket.display().to_string();
    // A stale socket file, left by a hook that was killed, is replaced.
    drop(std::os::unix::net::UnixDatagram::bind(&site.socket).unwrap());
    assert!(site.socket.exists());
    let hook = Hook::spawn(site.hook_command(&["--listen", &socket]));
    wait_until("the socket", Duration::from_secs(10), || {
        fs::metadata(&site.socket).is_ok_and(|m| m.mode() & 0o7777 == 0o660)
    });
    let meta = fs::metadata(&site.socket).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, 33), "root:www-data");
    // Neither its owner's group nor others: `nobody` cannot send to it.
    let send = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"])
        .arg("import socket,sys; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'status=502', sys.argv[1])")
        .arg(&site.socket)
        .output()
        .unwrap();
    assert!(!send.status.success());
    assert!(
        stderr(&send).contains("PermissionError"),
        "{}",
        stderr(&send)
    );

    // A second hook on the same socket is refused, and the first keeps it.
    let out = site.hook_command(&["--listen", &socket]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "php-relaunch: --listen '{socket}' is held by a running php-relaunch hook: stop it first\n"
        )
    );

    relaunched_by_the_first_502(&site);
    let (code, said) = hook.stop();
    assert_eq!(code, Some(0), "{said}");
    assert!(!site.socket.exists(), "removed on SIGTERM");
}

#[test]
fn a_502_of_a_healthy_php_fpm_is_logged_and_nothing_is_relaunched() {
    let site = HookSite::start();
    let master = site.site.fpm.master().unwrap();
    let socket = site.socket.display().to_string();
    let hook = Hook::spawn(site.hook_command(&["--listen", &socket]));
    wait_until("the socket", Duration::from_secs(10), || {
        site.socket.exists()
    });

    assert_eq!(curl_status(&site.page("bad-gateway.php")), "502");
    let line = site.wait_for_hook_lines(1).remove(0);
    for (key, value) in [
        ("verdict", "200"),
        ("action", "none"),
        ("state", "healthy"),
        ("trigger", "hook"),
        ("events", "1"),
    ] {
        assert_eq!(field(&line, key), Some(value), "{key}: {line}");
    }
    assert_eq!(site.site.fpm.master(), Some(master), "left alone");
    drop(hook);
}

#[test]
fn a_storm_of_502s_relaunches_once_and_the_hook_stays_small() {
    let site = HookSite::start();
    let socket = site.socket.display().to_string();
    let hook = Hook::spawn(site.hook_command(&["--listen", &socket]));
    wait_until("the socket", Duration::from_secs(10), || {
        site.socket.exists()
    });
    site.site.fpm.stop();

    // 500 requests at once, all let go together.
    let port = site.front.port;
    let start = Arc::new(Barrier::new(500));
    let clients: Vec<_> = (0..500)
        .map(|_| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                status_of(port, "/hello.php")
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(statuses.len(), 500);
    assert!(
        statuses.iter().filter(|&&s| s == 502).count() > 10,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 502].contains(s)),
        "{statuses:?}"
    );

    site.wait_for_hook_lines(1);
    // Whatever the storm left queued has arrived by now.
    thread::sleep(Duration::from_secs(1));
    let lines = site.hook_lines();
    let relaunches = lines
        .iter()
        .filter(|l| field(l, "action") != Some("none"))
        .count();
    assert_eq!(relaunches, 1, "{lines:?}");
    assert_eq!(curl_status(&site.page("hello.php")), "200");
    let rss_kib: u64 = fs::read_to_string(format!("/proc/{}/status", hook.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap();
    assert!(rss_kib < 32 * 1024, "the hook's RSS is {rss_kib} KiB");
    drop(hook);
}

#[test]
fn garbage_on_the_socket_starts_no_run_and_is_counted() {
    let site = HookSite::start();
    let socket = site.socket.display().to_string();
    let hook = Hook::spawn(site.hook_command(&["--listen", &socket]));
    wait_until("the socket", Duration::from_secs(10), || {
        site.socket.exists()
    });
    let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let random: Vec<u8> = (0..4096u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes()[1])
        .collect();
    let big = vec![b'x'; 64 * 1024];
    for datagram in [
        &random[..],
        &big[..],
        b"<190>Nov 29 22:34:36 another_tag: status=502 upstream=- uri=/",
        b"status=200 upstream=- uri=/",
    ] {
        sender.send_to(datagram, &site.socket).unwrap();
    }
    thread::sleep(Duration::from_millis(500));
    assert!(
        site.site.log_lines().is_empty(),
        "{:?}",
        site.site.log_lines()
    );
    assert!(alive(hook.pid()));

    assert_eq!(curl_status(&site.page("bad-gateway.php")), "502");
    let line = site.wait_for_hook_lines(1).remove(0);
    assert_eq!(field(&line, "ignored"), Some("4"), "{line}");
    let (code, said) = hook.stop();
    assert_eq!(code, Some(0), "{said}");
}

#[test]
fn apaches_piped_log_relaunches_a_hung_php_fpm() {
    let site = Site::start();
    let dir = site.dir.path();
    let www = dir.join("www");
    fs::write(www.join("hello.php"), "<?php echo 'hello';\n").unwrap();
    let apache_dir = dir.join("apache");
    fs::create_dir(&apache_dir).unwrap();
    let port = free_port();
    let heartbeat = format!("http://127.0.0.1:{port}/php-heartbeat.php");
    let hook: Vec<String> = site
        .subcommand(&["hook", "--stdin"], &heartbeat, "1", &[""])
        .get_args()
        .map(|a| match a.to_string_lossy().as_ref() {
            "" => "''".to_owned(),
            a => a.to_owned(),
        })
        .collect();
    // The shipped lines, with this test's binary and arguments.
    let shipped = fs::read_to_string(project().join("apache/hook.conf")).unwrap();
    let custom_log = shipped
        .lines()
        .filter(|l| l.starts_with("LogFormat") || l.starts_with("CustomLog"))
        .map(|l| {
            l.replace(
                "/usr/sbin/php-relaunch hook --stdin http://127.0.0.1:8889/php-heartbeat.php 5",
                &format!("{} {}", env!("CARGO_BIN_EXE_php-relaunch"), hook.join(" ")),
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        custom_log.contains(env!("CARGO_BIN_EXE_php-relaunch")),
        "{custom_log}"
    );
    let modules = "/usr/lib/apache2/modules";
    let d = apache_dir.display();
    let mut conf = format!(
        "ServerRoot {d}\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\nDefaultRuntimeDir {d}\n\
         Mutex file:{d}\nListen 127.0.0.1:{port}\nUser www-data\nGroup www-data\nServerName localhost\n\
         DocumentRoot {www}\nProxyTimeout 2\n",
        www = www.display()
    );
    for module in ["mpm_event", "authz_core", "proxy", "proxy_fcgi"] {
        let _ = writeln!(conf, "LoadModule {module}_module {modules}/mod_{module}.so");
    }
    let _ = write!(
        conf,
        "<FilesMatch \\.php$>\n    SetHandler \"proxy:unix:{}|fcgi://localhost\"\n</FilesMatch>\n{custom_log}\n",
        site.fpm.socket.display()
    );
    fs::write(apache_dir.join("httpd.conf"), conf).unwrap();
    let out = Command::new("/usr/sbin/apache2")
        .arg("-f")
        .arg(apache_dir.join("httpd.conf"))
        .args(["-k", "start"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(out.status.success(), "apache2: {}", stderr(&out));
    let apache = ApacheGuard(apache_dir.join("httpd.pid"));
    let page = format!("http://127.0.0.1:{port}/hello.php");
    wait_until("apache to answer", Duration::from_secs(10), || {
        curl_status(&page) == "200"
    });

    // Hung: Apache gives up after ProxyTimeout with a 504, and its piped log tells the hook.
    site.fpm.freeze();
    let started = Instant::now();
    assert_eq!(curl_status(&page), "504");
    wait_until("the hook's line", Duration::from_secs(30), || {
        site.log_lines()
            .iter()
            .any(|l| field(l, "trigger") == Some("hook"))
    });
    let line = site.log_lines().pop().unwrap();
    assert_eq!(field(&line, "action"), Some("kill+start"), "{line}");
    assert_eq!(field(&line, "state"), Some("healthy"), "{line}");
    assert_eq!(curl_status(&page), "200");
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(apache);
}

/// Stops the Apache whose pid file this is.
struct ApacheGuard(PathBuf);

impl Drop for ApacheGuard {
    fn drop(&mut self) {
        if let Some(pid) = crate::common::live_pid_in(&self.0) {
            signal(pid, rustix::process::Signal::TERM);
            let _ = wait_until_quietly(Duration::from_secs(10), || !alive(pid));
        }
    }
}

#[test]
fn the_shipped_units_pass_systemd_analyze_verify() {
    let dir = crate::common::shared_tempdir();
    let service = fs::read_to_string(project().join("systemd/php-relaunch-hook.service"))
        .unwrap()
        .replace("/usr/sbin/php-relaunch", env!("CARGO_BIN_EXE_php-relaunch"));
    assert!(service.contains(" hook "), "{service}");
    fs::write(dir.path().join("php-relaunch-hook.service"), service).unwrap();
    let socket = fs::read_to_string(project().join("systemd/php-relaunch-hook.socket")).unwrap();
    for setting in [
        "ListenDatagram=/run/php-relaunch/hook.sock",
        "SocketMode=0660",
        "SocketGroup=www-data",
        "TriggerLimitIntervalSec=",
        "TriggerLimitBurst=",
    ] {
        assert!(socket.contains(setting), "{setting}");
    }
    fs::write(dir.path().join("php-relaunch-hook.socket"), socket).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("php-relaunch-hook.socket"))
        .arg(dir.path().join("php-relaunch-hook.service"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

/// Waits, if need be, for the first 20 seconds of a minute, so a loop started now runs for half a
/// minute more (`--every` stops at the end of the cron minute).
fn early_in_a_minute() {
    use chrono::Timelike as _;
    wait_until(
        "the first 20 seconds of a minute",
        Duration::from_secs(61),
        || chrono::Local::now().second() < 20,
    );
}

#[test]
fn a_hook_beside_an_every_loop_answers_while_the_loop_sleeps() {
    let site = HookSite::start();
    let socket = site.socket.display().to_string();
    let hook = Hook::spawn(site.hook_command(&["--listen", &socket]));
    wait_until("the socket", Duration::from_secs(10), || {
        site.socket.exists()
    });
    early_in_a_minute();
    // The same php-fpm, the same lock: a check now, the next in 30 s.
    let mut every = site
        .site
        .command(&site.site.heartbeat(), "2", &["--every", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_secs(1));
    relaunched_by_the_first_502(&site);
    assert!(
        every.try_wait().unwrap().is_none(),
        "the hook answered while the loop slept, not after it ended"
    );
    let status = every.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    hook.stop();
}
