//! Text from outside reaches root escaped, and `doctor` reads only root's files and wakes nothing
//! (#18 items 6, #19 item 8). The attacker is `nobody`: a fake FastCGI server of its own answering
//! with terminal escape sequences, its own crontab with a URL and escape sequences in it.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use rustix::process::Signal;

use crate::common::{
    Fpm, NOBODY, Smtp, field, free_port, php_relaunch, pids_of_exe, project, shared_tempdir,
    signal, stderr, stdout, wait_until, wait_until_quietly,
};

/// A FastCGI reply whose `Status:` header, body and stderr carry escape sequences: CSI and OSC
/// (ESC), BEL, DEL, the 8-bit CSI U+009B (as UTF-8 and as a lone byte) and a right-to-left override.
const FAKE_FASTCGI: &str = r#"
import socket, struct, sys
def rec(kind, content):
    pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBB", 1, kind, 1, len(content), pad, 0) + content + b"\0" * pad
nasty = b"\x1b[31m\x1b]0;owned\x07\x7f\xc2\x9b2J\x9b\xe2\x80\xae"
stdout = b"Status: " + nasty + b"502 Bad\r\nContent-type: text/plain\r\n\r\nbody " + nasty
reply = rec(6, stdout) + rec(6, b"") + rec(7, b"stderr " + nasty) + rec(7, b"") + rec(3, b"\0" * 8)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(16)
while True:
    conn, _ = server.accept()
    conn.settimeout(2)
    seen = b""
    try:
        while not seen.endswith(b"\x01\x05\x00\x01\x00\x00\x00\x00"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            seen += chunk
        conn.sendall(reply)
    except OSError:
        pass
    conn.close()
"#;

/// The reply above as served by a program of `nobody`'s on a loopback port; ended by pid on drop.
struct FakeServer {
    port: u16,
    child: Child,
}

impl FakeServer {
    fn start(dir: &Path) -> FakeServer {
        let script = dir.join("fake_fastcgi.py");
        fs::write(&script, FAKE_FASTCGI).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
        let port = free_port();
        let child = Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "/usr/bin/python3",
            ])
            .arg(&script)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(
            "nobody's fake FastCGI server",
            Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        FakeServer { port, child }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The characters that must never reach a terminal or a mail raw: C0 controls but line ends and
/// tabs, DEL, C1, and the bidi controls that reorder what a reader sees.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| {
            (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
                || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect()
}

fn assert_clean(what: &str, bytes: &[u8]) {
    assert!(
        !bytes.contains(&0x1b) && !bytes.contains(&0x9b) && !bytes.contains(&0x07),
        "{what} has raw escape bytes: {:?}",
        String::from_utf8_lossy(bytes)
    );
    let text = String::from_utf8_lossy(bytes);
    let found = raw_controls(&text);
    assert!(found.is_empty(), "{what} has raw {found:?}: {text:?}");
}

/// A mail's base64 body parts decoded, so what a mail reader shows is checked, not its encoding.
fn decoded(message: &str) -> String {
    let Some((head, body)) = message.split_once("\n\n") else {
        return message.to_owned();
    };
    if !head
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: base64")
    {
        return message.to_owned();
    }
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut bits, mut count, mut out) = (0u32, 0, Vec::new());
    for &b in body.as_bytes() {
        let Some(v) = alphabet.iter().position(|&a| a == b) else {
            continue;
        };
        bits = (bits << 6) | u32::try_from(v).unwrap();
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(u8::try_from((bits >> count) & 0xff).unwrap());
        }
    }
    format!("{head}\n\n{}", String::from_utf8_lossy(&out))
}

#[test]
fn escape_sequences_from_a_fake_fastcgi_server_reach_no_output_raw() {
    let dir = shared_tempdir();
    let d = dir.path();
    let server = FakeServer::start(d);
    let target = format!("fcgi://127.0.0.1:{}/ping", server.port);

    // A watching run: its log line and its mail.
    let fpm = Fpm::new(d);
    fpm.start();
    let smtp = Smtp::start(d);
    let log = d.join("log");
    let out = php_relaunch()
        .args([&target, "2", "root@localhost", "--smtp", &smtp.url()])
        .args(fpm.direct_args())
        .arg("--log")
        .arg(&log)
        .arg("--lock")
        .arg(d.join("lock"))
        .arg("--state")
        .arg(d.join("state.json"))
        .output()
        .unwrap();
    assert_clean("the run's stdout", &out.stdout);
    assert_clean("the run's stderr", &out.stderr);
    let text = fs::read(&log).unwrap();
    let line = String::from_utf8_lossy(&text).into_owned();
    assert_eq!(field(&line, "mail"), Some("sent"), "{line}");
    assert!(field(&line, "error").is_some(), "{line}");
    assert_clean("the log", &text);
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_clean("the mail", messages[0].as_bytes());
    assert_clean("the mail as read", decoded(&messages[0]).as_bytes());
    assert!(
        decoded(&messages[0]).contains("bad Status header"),
        "{}",
        messages[0]
    );

    // check's stdout (and stderr).
    let out = php_relaunch()
        .args(["check", &target, "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("unhealthy: "), "{}", stdout(&out));
    assert_clean("check's stdout", &out.stdout);
    assert_clean("check's stderr", &out.stderr);
}

/// Removes what it made when dropped (a file, or a directory it created), so the host is left as
/// it was.
struct Made(PathBuf);

impl Drop for Made {
    fn drop(&mut self) {
        if self.0.is_dir() && !self.0.is_symlink() {
            let _ = fs::remove_dir(&self.0);
        } else {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// A listener standing for a URL planted in a file: counts the connections it is given and answers
/// each with escape sequences.
fn planted_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    thread::spawn(move || {
        for conn in listener.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut conn) = conn {
                use std::io::Write as _;
                let _ = conn.write_all(b"\x1b]0;owned\x07\x1b[2J");
            }
        }
    });
    (port, seen)
}

fn doctor(extra: &[&str]) -> Output {
    php_relaunch().arg("doctor").args(extra).output().unwrap()
}

#[test]
fn doctor_reads_no_file_others_can_write_and_connects_to_nothing_found_there() {
    let (port, seen) = planted_listener();
    let line = |tag: &str| {
        format!(
            "# \x1b]0;{tag}\x07\x1b[2J\u{9b}31m\u{202e}\n\
             * * * * * /usr/sbin/php-relaunch 'fcgi://127.0.0.1:{port}/ping' 2 '' >/dev/null 2>&1\n"
        )
    };
    let pid = std::process::id();
    // nobody's crontab, in cron's spool (made for the test where cron is not installed).
    let spool = Path::new("/var/spool/cron/crontabs");
    let mut made_dirs = Vec::new();
    for dir in [Path::new("/var/spool/cron"), spool] {
        if !dir.exists() {
            fs::create_dir(dir).unwrap();
            made_dirs.push(Made(dir.to_owned()));
        }
    }
    let nobodys = Made(spool.join("nobody"));
    assert!(
        !nobodys.0.exists(),
        "{} exists already",
        nobodys.0.display()
    );
    fs::write(&nobodys.0, line("nobody")).unwrap();
    rustix::fs::chown(
        &nobodys.0,
        Some(rustix::fs::Uid::from_raw(NOBODY)),
        Some(rustix::fs::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    // A root file in cron.d that anyone can write, and a link there to a file nobody owns.
    let writable = Made(PathBuf::from(format!(
        "/etc/cron.d/php-relaunch-trust-text-{pid}"
    )));
    fs::write(&writable.0, line("writable")).unwrap();
    fs::set_permissions(&writable.0, fs::Permissions::from_mode(0o666)).unwrap();
    let dir = shared_tempdir();
    let owned = dir.path().join("cron");
    fs::write(&owned, line("linked")).unwrap();
    rustix::fs::chown(&owned, Some(rustix::fs::Uid::from_raw(NOBODY)), None).unwrap();
    let link = Made(PathBuf::from(format!(
        "/etc/cron.d/php-relaunch-trust-link-{pid}"
    )));
    symlink(&owned, &link.0).unwrap();

    for args in [&[][..], &["--json"][..]] {
        let out = doctor(args);
        assert_clean("doctor's stdout", &out.stdout);
        assert_clean("doctor's stderr", &out.stderr);
        let said = stdout(&out);
        assert!(!said.contains(&port.to_string()), "{said}");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "doctor connected to a URL found in a file others can write"
    );
    drop((nobodys, writable, link));
    drop(made_dirs.into_iter().rev().collect::<Vec<_>>());
}

/// A pool whose socket tests/fixtures/activator.py holds, as a `.socket` unit would, with no
/// php-fpm running until a connection comes.
struct Sleeping {
    bin: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    activator: Child,
    _dir: tempfile::TempDir,
}

impl Sleeping {
    fn start() -> Sleeping {
        let dir = shared_tempdir();
        let d = dir.path();
        let bin = d.join("php-fpm");
        fs::copy("/usr/sbin/php-fpm8.2", &bin).unwrap();
        let socket = d.join("www.sock");
        let config = d.join("php-fpm.conf");
        fs::write(
            &config,
            format!(
                "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\n\n\
                 [www]\nuser = www-data\ngroup = www-data\nlisten = {socket}\npm = ondemand\n\
                 pm.max_children = 2\nping.path = /ping\n",
                d = d.display(),
                socket = socket.display(),
            ),
        )
        .unwrap();
        let activator = Command::new("/usr/bin/python3")
            .arg(project().join("tests/fixtures/activator.py"))
            .arg(&socket)
            .arg("--")
            .arg(&bin)
            .args(["--nodaemonize", "--fpm-config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ready = PathBuf::from(format!("{}.ready", socket.display()));
        wait_until("the activator", Duration::from_secs(10), || ready.exists());
        Sleeping {
            bin,
            config,
            socket,
            activator,
            _dir: dir,
        }
    }

    fn activations(&self) -> usize {
        fs::read_to_string(format!("{}.activations", self.socket.display()))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

impl Drop for Sleeping {
    fn drop(&mut self) {
        signal(self.activator.id(), Signal::TERM);
        let _ = self.activator.wait();
        for pid in pids_of_exe(&self.bin) {
            signal(pid, Signal::KILL);
        }
        let _ = wait_until_quietly(Duration::from_secs(5), || pids_of_exe(&self.bin).is_empty());
    }
}

#[test]
fn doctor_leaves_a_sleeping_on_demand_pool_asleep() {
    let pool = Sleeping::start();
    let target = format!("unix://{};/ping", pool.socket.display());
    let cron = Made(PathBuf::from(format!(
        "/etc/cron.d/php-relaunch-trust-sleep-{}",
        std::process::id()
    )));
    fs::write(
        &cron.0,
        format!(
            "* * * * * root /usr/sbin/php-relaunch '{target}' 2 '' --on-demand >/dev/null 2>&1\n"
        ),
    )
    .unwrap();
    let config = pool.config.display().to_string();
    let out = doctor(&["--fpm-config", &config]);
    assert_eq!(
        pool.activations(),
        0,
        "doctor woke the pool: {}",
        stdout(&out)
    );
    assert!(pids_of_exe(&pool.bin).is_empty(), "php-fpm was started");
    let said = stdout(&out);
    let about: Vec<&str> = said
        .lines()
        .filter(|l| l.contains(&cron.0.display().to_string()))
        .collect();
    assert_eq!(about.len(), 1, "{said}{}", stderr(&out));
    assert!(about[0].contains("asleep"), "{}", about[0]);
    assert!(!about[0].contains("answers"), "{}", about[0]);
}
