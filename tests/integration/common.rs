//! Test environment: a private php-fpm (own binary copy, config, socket and pid file), a private nginx
//! serving the project's heartbeat vhost, an SMTP sink, all on loopback in a temporary directory.
//! Everything started here is ended here, by pid, when the value is dropped, even if the test failed.

use std::fmt::Write as _;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// The binary under test, as users run it: no backtraces asked for, no proxy in the way.
pub fn php_relaunch() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_php-relaunch"));
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy");
    cmd
}

/// The project's root, where nginx/ lives.
pub fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory that php-fpm's and nginx's unprivileged workers can read.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

pub fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid.cast_signed()) {
        let _ = kill_process(pid, sig);
    }
}

/// `/proc/PID/stat` state letter, or None when the process is gone.
pub fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.chars().next()
}

/// Waits until `ok`, at most `limit`; says whether it got there.
pub fn wait_until_quietly(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() >= limit {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Alive: exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The pid in a pid file, if that process is alive. Read as carefully as the watchdog reads it: the
/// security tests put FIFOs and links to /dev/zero there.
pub fn live_pid_in(pid_file: &Path) -> Option<u32> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK)
                .bits()
                .cast_signed(),
        )
        .open(pid_file)
        .ok()
        .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))?;
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    let pid = text.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// Live pids whose executable is `exe`.
pub fn pids_of_exe(exe: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if fs::read_link(entry.path().join("exe")).is_ok_and(|e| e == exe) && alive(pid) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// A private php-fpm instance, run from a copy of Debian's binary so that Debian's init script, which
/// stops every process of /usr/sbin/php-fpm8.2, never touches it.
pub struct Fpm {
    pub bin: PathBuf,
    pub config: PathBuf,
    pub pid_file: PathBuf,
    pub socket: PathBuf,
    /// The TCP port it listens on instead of `socket`, if any.
    pub port: Option<u16>,
}

impl Fpm {
    /// An instance listening on a unix socket in `dir`.
    pub fn new(dir: &Path) -> Fpm {
        Fpm::create(dir, None)
    }

    /// An instance listening on a free loopback TCP port.
    pub fn new_tcp(dir: &Path) -> Fpm {
        Fpm::create(dir, Some(free_port()))
    }

    fn create(dir: &Path, port: Option<u16>) -> Fpm {
        let bin = dir.join("php-fpm");
        fs::copy("/usr/sbin/php-fpm8.2", &bin).unwrap();
        let fpm = Fpm {
            bin: bin.canonicalize().unwrap(),
            config: dir
                .join("php-fpm.conf")
                .canonicalize()
                .unwrap_or(dir.join("php-fpm.conf")),
            pid_file: dir.join("php-fpm.pid"),
            socket: dir.join("php-fpm.sock"),
            port,
        };
        let listen = match port {
            Some(port) => format!("127.0.0.1:{port}"),
            None => fpm.socket.display().to_string(),
        };
        fs::write(
            &fpm.config,
            format!(
                "[global]\npid = {pid}\nerror_log = {dir}/php-fpm.log\ndaemonize = yes\n\n\
                 [www]\nuser = www-data\ngroup = www-data\nlisten = {listen}\n\
                 listen.owner = www-data\nlisten.group = www-data\nlisten.mode = 0660\n\
                 pm = static\npm.max_children = 2\nping.path = /ping\npm.status_path = /status\n",
                pid = fpm.pid_file.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        fpm
    }

    pub fn start(&self) {
        let status = loop {
            let started = Command::new(&self.bin)
                .args(["--daemonize", "--fpm-config"])
                .arg(&self.config)
                .stdin(Stdio::null())
                .status();
            match started {
                // Another test thread forked while this binary's copy was still open for writing.
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    thread::sleep(Duration::from_millis(20));
                }
                other => break other.unwrap(),
            }
        };
        assert!(status.success(), "private php-fpm did not start");
        wait_until("php-fpm master", Duration::from_secs(10), || {
            self.master().is_some()
        });
    }

    /// The running master, from the pid file.
    pub fn master(&self) -> Option<u32> {
        live_pid_in(&self.pid_file)
    }

    /// Every live process of this instance (master and workers).
    pub fn pids(&self) -> Vec<u32> {
        pids_of_exe(&self.bin)
    }

    /// Stops the instance the polite way and waits for it to be gone.
    pub fn stop(&self) {
        if let Some(master) = self.master() {
            signal(master, Signal::TERM);
        }
        wait_until("php-fpm to stop", Duration::from_secs(10), || {
            self.pids().is_empty()
        });
    }

    /// Freezes master and workers with SIGSTOP: a hung php-fpm.
    /// A worker the master forked just before its own STOP is caught by the next round.
    pub fn freeze(&self) {
        wait_until("php-fpm to stop", Duration::from_secs(5), || {
            let pids = self.pids();
            for &pid in &pids {
                signal(pid, Signal::STOP);
            }
            pids.iter().all(|&p| state(p) == Some('T'))
        });
    }

    /// The FastCGI target of `path` on this instance ("" for GET_VALUES).
    pub fn target(&self, path: &str) -> String {
        match self.port {
            Some(port) => format!("fcgi://127.0.0.1:{port}{path}"),
            None if path.is_empty() => format!("unix://{}", self.socket.display()),
            None => format!("unix://{};{path}", self.socket.display()),
        }
    }

    /// Appends pool settings to the config (the [www] section is last) and restarts the instance.
    pub fn reconfigure(&self, lines: &str) {
        let conf = fs::read_to_string(&self.config).unwrap() + lines;
        fs::write(&self.config, conf).unwrap();
        self.stop();
        self.start();
    }

    /// Arguments that make php-relaunch control this instance directly.
    pub fn direct_args(&self) -> Vec<String> {
        vec![
            "--fpm-bin".into(),
            self.bin.display().to_string(),
            "--fpm-config".into(),
            self.config.display().to_string(),
        ]
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        // The master first, so it forks no replacement for a worker killed before it; then whatever
        // of this binary is left, until nothing is.
        if let Some(master) = self.master() {
            signal(master, Signal::KILL);
        }
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                signal(pid, Signal::CONT);
                signal(pid, Signal::KILL);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A private nginx serving the project's heartbeat vhost and allow-list, on a free loopback port,
/// passing PHP to `fastcgi` (`unix:/path` or `127.0.0.1:port`).
pub struct Nginx {
    pub port: u16,
    pub pid_file: PathBuf,
    pub config: PathBuf,
    /// The master started here; kept so it can be ended even after its directory is gone.
    started: std::cell::Cell<Option<u32>>,
}

impl Nginx {
    pub fn new(dir: &Path, fastcgi: &str) -> Nginx {
        let port = free_port();
        let www = dir.join("www");
        fs::create_dir_all(&www).unwrap();
        fs::copy(
            project().join("nginx/php-heartbeat.php"),
            www.join("php-heartbeat.php"),
        )
        .unwrap();
        fs::write(
            www.join("error500.php"),
            "<?php http_response_code(500); echo 'broken';\n",
        )
        .unwrap();
        fs::write(
            www.join("slow.php"),
            "<?php sleep((int)($_GET['s'] ?? 30)); echo 'late';\n",
        )
        .unwrap();

        // The project's vhost, moved to this test's port, directory and php-fpm. The heartbeat
        // location is widened to every .php file so the tests can request their extra pages.
        let vhost = fs::read_to_string(project().join("nginx/heartbeat.conf"))
            .unwrap()
            .replace(":8889;", &format!(":{port};"))
            .replace(
                "root /var/www/heartbeat;",
                &format!("root {};", www.display()),
            )
            .replace("unix:/run/php/php8.2-fpm.sock", fastcgi)
            .replace(
                "location = /php-heartbeat.php",
                r"location ~ ^/[a-z0-9-]+\.php$",
            );
        fs::write(dir.join("heartbeat.conf"), vhost).unwrap();
        fs::copy(
            project().join("nginx/heartbeat-allow.conf"),
            dir.join("heartbeat-allow.conf"),
        )
        .unwrap();
        // The vhost includes `fastcgi_params` relative to nginx's config directory, here `dir`.
        fs::copy("/etc/nginx/fastcgi_params", dir.join("fastcgi_params")).unwrap();

        let nginx = Nginx {
            port,
            pid_file: dir.join("nginx.pid"),
            config: dir.join("nginx.conf"),
            started: std::cell::Cell::new(None),
        };
        fs::write(
            &nginx.config,
            format!(
                "user www-data;\nworker_processes 1;\npid {pid};\nerror_log {dir}/nginx-error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  include {dir}/heartbeat-allow.conf;\n  include {dir}/heartbeat.conf;\n}}\n",
                pid = nginx.pid_file.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        nginx
    }

    /// An nginx on `port` with this whole config (which must write its pid to `dir/nginx.pid`).
    pub fn custom(dir: &Path, port: u16, config: &str) -> Nginx {
        let nginx = Nginx {
            port,
            pid_file: dir.join("nginx.pid"),
            config: dir.join("nginx.conf"),
            started: std::cell::Cell::new(None),
        };
        fs::write(&nginx.config, config).unwrap();
        nginx
    }

    pub fn start(&self) {
        let out = Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_until("nginx to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        self.started.set(self.master());
    }

    pub fn master(&self) -> Option<u32> {
        live_pid_in(&self.pid_file)
    }

    pub fn stop(&self) {
        if let Some(pid) = self.master() {
            signal(pid, Signal::TERM);
            wait_until("nginx to stop", Duration::from_secs(10), || !alive(pid));
        }
    }

    pub fn url(&self, page: &str) -> String {
        format!("http://127.0.0.1:{}/{page}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(pid) = self.started.get().filter(|&pid| alive(pid)) {
            // QUIT lets the master take its workers along; KILL it if it lingers.
            signal(pid, Signal::TERM);
            let start = Instant::now();
            while alive(pid) && start.elapsed() < Duration::from_secs(5) {
                thread::sleep(Duration::from_millis(20));
            }
            signal(pid, Signal::KILL);
        }
    }
}

/// An SMTP sink (aiosmtpd's Mailbox handler, which records the envelope as X-MailFrom and X-RcptTo)
/// on a free loopback port.
pub struct Smtp {
    pub port: u16,
    pub maildir: PathBuf,
    child: Child,
}

impl Smtp {
    pub fn start(dir: &Path) -> Smtp {
        Smtp::start_on(dir, free_port())
    }

    /// The same on `port`.
    pub fn start_on(dir: &Path, port: u16) -> Smtp {
        let maildir = dir.join("maildir");
        let child = Command::new("/usr/bin/python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-c",
                "aiosmtpd.handlers.Mailbox",
                "-l",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the SMTP sink", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Smtp {
            port,
            maildir,
            child,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message delivered so far, quoted-printable decoded (lettre uses it for lines over 76).
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| decode_quoted_printable(&fs::read_to_string(e.path()).unwrap()))
            .collect()
    }
}

/// Folded header lines unfolded; in the body, soft line breaks (`=` at the end of a line) joined and
/// `=XX` turned back into bytes.
fn decode_quoted_printable(text: &str) -> String {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let joined = format!("{head}\n\n{}", body.replace("=\r\n", "").replace("=\n", ""));
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// php-fpm and nginx together, and the paths one php-relaunch run needs.
pub struct Site {
    pub fpm: Fpm,
    pub nginx: Nginx,
    pub log: PathBuf,
    pub lock: PathBuf,
    pub state: PathBuf,
    // Dropped last, after the servers using it.
    pub dir: tempfile::TempDir,
}

impl Site {
    /// A running private php-fpm behind a running private nginx.
    pub fn start() -> Site {
        Site::start_in(shared_tempdir())
    }

    /// The same in `dir` (which php-fpm's and nginx's workers must be able to reach).
    pub fn start_in(dir: tempfile::TempDir) -> Site {
        let fpm = Fpm::new(dir.path());
        fpm.start();
        let upstream = format!("unix:{}", fpm.socket.display());
        Site::around(dir, fpm, &upstream)
    }

    /// A site of `fpm` (started) in `dir`: nginx started in front of it at `upstream`
    /// (`unix:PATH` or `HOST:PORT`), with the site's log, lock and state paths.
    pub fn around(dir: tempfile::TempDir, fpm: Fpm, upstream: &str) -> Site {
        let nginx = Nginx::new(dir.path(), upstream);
        nginx.start();
        Site {
            log: dir.path().join("php-relaunch.log"),
            lock: dir.path().join("php-relaunch.lock"),
            state: dir.path().join("state.json"),
            fpm,
            nginx,
            dir,
        }
    }

    pub fn heartbeat(&self) -> String {
        self.nginx.url("php-heartbeat.php")
    }

    /// `php-relaunch URL TIMEOUT EXTRA…` controlling the private php-fpm, with this site's log and lock.
    pub fn command(&self, url: &str, timeout: &str, extra: &[&str]) -> Command {
        self.subcommand(&[], url, timeout, extra)
    }

    /// `php-relaunch WORDS… URL TIMEOUT EXTRA…` (e.g. `hook --listen …`), as `command` does it.
    pub fn subcommand(&self, words: &[&str], url: &str, timeout: &str, extra: &[&str]) -> Command {
        let mut cmd = php_relaunch();
        cmd.args(words)
            .arg(url)
            .arg(timeout)
            .args(extra)
            .args(self.fpm.direct_args())
            .arg("--log")
            .arg(&self.log)
            .arg("--lock")
            .arg(&self.lock)
            .arg("--state")
            .arg(&self.state);
        cmd
    }

    pub fn run(&self, url: &str, timeout: &str, extra: &[&str]) -> Output {
        self.command(url, timeout, extra).output().unwrap()
    }

    pub fn log_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Whether the heartbeat answers 200 now, checked with curl, not with the code under test.
    pub fn heartbeat_ok(&self) -> bool {
        curl_status(&self.heartbeat()) == "200"
    }
}

/// The status curl sees, or "000" when it sees none.
pub fn curl_status(url: &str) -> String {
    let out = Command::new("curl")
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
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `key=` in a log line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!(" {key}=");
    let start = line.find(&needle)? + needle.len();
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next();
    }
    rest.split(' ').next()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The unprivileged user the security tests play the attacker as.
pub const NOBODY: u32 = 65534;

/// An unprivileged user's own program posing as a php-fpm master (tests/fixtures/fake_master.c),
/// built with cc into a directory of its own and owned by `nobody`. Each one started runs as nobody
/// under the title given and forks one "worker". Should root ever run the program, it leaves `mark`.
/// Every process of it is ended, by pid, when this is dropped.
pub struct Impostor {
    pub bin: PathBuf,
    pub mark: PathBuf,
    started: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Impostor {
    pub fn build() -> Impostor {
        let dir = shared_tempdir();
        let bin = dir.path().join("impostor");
        let mark = dir.path().join("root-ran-me");
        let out = Command::new("cc")
            .arg(format!("-DMARK=\"{}\"", mark.display()))
            .arg("-o")
            .arg(&bin)
            .arg(project().join("tests/fixtures/fake_master.c"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::os::unix::fs::chown(&bin, Some(NOBODY), Some(NOBODY)).unwrap();
        Impostor {
            bin,
            mark,
            started: Vec::new(),
            _dir: dir,
        }
    }

    /// Starts one as nobody with `title` as its whole command line; waits for its child.
    pub fn start(&mut self, title: &str) -> u32 {
        use std::os::unix::process::CommandExt;
        let before = self.pids().len();
        let child = Command::new(&self.bin)
            .arg0(title)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.started.push(child);
        wait_until(
            "the impostor and its child",
            Duration::from_secs(10),
            || self.pids().len() >= before + 2,
        );
        pid
    }

    /// Every live process of the impostor's program.
    pub fn pids(&self) -> Vec<u32> {
        pids_of_exe(&self.bin)
    }

    /// Whether root ever ran the program.
    pub fn ran_as_root(&self) -> bool {
        self.mark.exists()
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        for pid in self.pids() {
            signal(pid, Signal::KILL);
        }
        for child in &mut self.started {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Apache's mod_proxy_balancer over two replicas, on loopback, with its balancer-manager. The
/// replicas listen on TCP, or on unix sockets (members `unix:SOCKET|fcgi://rN`).
pub struct Apache {
    pub replicas: Vec<Fpm>,
    pub port: u16,
    pid_file: PathBuf,
    /// A pools file naming the replicas and the balancer-manager.
    pub pools_file: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Apache {
    pub fn start(unix: bool) -> Apache {
        let dir = shared_tempdir();
        let d = dir.path().display().to_string();
        fs::create_dir(dir.path().join("www")).unwrap();
        fs::write(dir.path().join("www/hello.php"), "<?php echo 'hello';\n").unwrap();
        let replicas: Vec<Fpm> = (1..=2)
            .map(|n| {
                let home = dir.path().join(format!("r{n}"));
                fs::create_dir(&home).unwrap();
                let fpm = if unix {
                    Fpm::new(&home)
                } else {
                    Fpm::new_tcp(&home)
                };
                fpm.start();
                fpm
            })
            .collect();
        let port = free_port();
        let modules = "/usr/lib/apache2/modules";
        let member = |n: usize, r: &Fpm| match r.port {
            Some(port) => format!("fcgi://127.0.0.1:{port}"),
            None => format!("unix:{}|fcgi://r{n}", r.socket.display()),
        };
        let ping = |r: &Fpm| match r.port {
            Some(port) => format!("fcgi://127.0.0.1:{port}/ping"),
            None => format!("unix://{};/ping", r.socket.display()),
        };
        let mut members = String::new();
        for (n, r) in (1..).zip(&replicas) {
            let _ = writeln!(members, "    BalancerMember \"{}\"", member(n, r));
        }
        let mut conf = format!(
            "ServerRoot {d}\nPidFile {d}/httpd.pid\nErrorLog {d}/httpd-error.log\nDefaultRuntimeDir {d}\n\
             Mutex file:{d}\nListen 127.0.0.1:{port}\nUser www-data\nGroup www-data\nServerName localhost\n\
             DocumentRoot {d}/www\n"
        );
        for module in [
            "mpm_event",
            "authz_core",
            "authz_host",
            "proxy",
            "proxy_fcgi",
            "proxy_balancer",
            "lbmethod_byrequests",
            "slotmem_shm",
        ] {
            let _ = writeln!(conf, "LoadModule {module}_module {modules}/mod_{module}.so");
        }
        let _ = write!(
            conf,
            "<Proxy balancer://php_www>\n{members}</Proxy>\n\
             <FilesMatch \\.php$>\n    SetHandler \"proxy:balancer://php_www\"\n</FilesMatch>\n\
             <Location /balancer-manager>\n    SetHandler balancer-manager\n    Require ip 127.0.0.1\n</Location>\n"
        );
        fs::write(dir.path().join("httpd.conf"), conf).unwrap();
        let out = Command::new("/usr/sbin/apache2")
            .arg("-f")
            .arg(dir.path().join("httpd.conf"))
            .args(["-k", "start"])
            .output()
            .unwrap();
        assert!(out.status.success(), "apache2: {}", stderr(&out));
        wait_until("apache to answer", Duration::from_secs(10), || {
            curl_status(&format!("http://127.0.0.1:{port}/hello.php")) == "200"
        });
        let pools_file = dir.path().join("pools.toml");
        let mut toml = format!(
            "[pools.www]\nbalancer = \"apache\"\nmanager_url = \"http://127.0.0.1:{port}/balancer-manager\"\n\
             balancer_name = \"php_www\"\n"
        );
        for (n, fpm) in (1..).zip(&replicas) {
            let _ = write!(
                toml,
                "\n[[pools.www.replicas]]\nfpm_bin = \"{}\"\nfpm_config = \"{}\"\n\
                 ping = \"{}\"\nmember = \"{}\"\n",
                fpm.bin.display(),
                fpm.config.display(),
                ping(fpm),
                member(n, fpm)
            );
        }
        fs::write(&pools_file, toml).unwrap();
        Apache {
            replicas,
            port,
            pid_file: dir.path().join("httpd.pid"),
            pools_file,
            dir,
        }
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        if let Some(pid) = live_pid_in(&self.pid_file) {
            signal(pid, rustix::process::Signal::TERM);
            let _ = wait_until_quietly(Duration::from_secs(10), || !alive(pid));
        }
    }
}
