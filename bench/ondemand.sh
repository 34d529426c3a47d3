#!/usr/bin/env bash
# What an on-demand pool saves and costs, against a private php-fpm (pm = ondemand) behind nginx on
# loopback, its socket held by tests/fixtures/activator.py as a systemd .socket unit holds it, with
# the socket directory read-only to php-fpm as the shipped service makes it (needs root and Debian's
# nginx and php8.2-fpm, installed if missing):
#   1. the memory an idle stop frees: RSS of the master and of master + workers after a request;
#   2. the first request after an idle stop (php-fpm started by it) against a warm one, median of
#      ROUNDS (default 20), each pool stopped by `php-relaunch idle-stop`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

rounds=${ROUNDS:-20}
install_missing nginx php8.2-fpm curl python3
bin=$(scripts/build.sh)

dir=$(mktemp -d)
chmod 755 "$dir"
mkdir -p "$dir/sockets" "$dir/www"
cp /usr/sbin/php-fpm8.2 "$dir/php-fpm"
echo '<?php echo "hello";' >"$dir/www/hello.php"
cat >"$dir/php-fpm.conf" <<CONF
[global]
pid = $dir/php-fpm.pid
error_log = $dir/php-fpm.log
process_control_timeout = 10s

[www]
user = www-data
group = www-data
listen = $dir/sockets/www.sock
pm = ondemand
pm.max_children = 4
pm.process_idle_timeout = 10s
CONF
port=$(free_port)
/usr/bin/python3 tests/fixtures/activator.py "$dir/sockets/www.sock" --read-only-dir -- \
    "$dir/php-fpm" --nodaemonize --fpm-config "$dir/php-fpm.conf" >/dev/null 2>&1 &
activator=$!
trap 'kill $activator 2>/dev/null; kill $(cat "$dir/nginx.pid" 2>/dev/null) 2>/dev/null; for p in $(pids_of_exe "$dir/php-fpm"); do kill -KILL $p; done; rm -rf "$dir"' EXIT
while [ ! -e "$dir/sockets/www.sock.ready" ]; do sleep 0.05; done
front_up "$dir" nginx "$port" "$dir/sockets/www.sock" "access_log off;"

/usr/bin/python3 - "$dir" "$port" "$bin" "$rounds" <<'PY'
import os, statistics, subprocess, sys, time
dir, port, bin, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
url = f"http://127.0.0.1:{port}/hello.php"

def request():
    start = time.perf_counter()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True, text=True)
    took = time.perf_counter() - start
    assert out.stdout == "200", out.stdout
    return took

def fpm_pids():
    found = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{p}/exe") == f"{dir}/php-fpm":
                found.append(p)
        except OSError:
            pass
    return found

def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

def master():
    with open(f"{dir}/php-fpm.pid") as f:
        return int(f.read())

def idle_stop():
    # The pool is idle since long ago, so one look stops it.
    with open(f"{dir}/idle.json", "w") as f:
        f.write('{"idle_since": 1}')
    subprocess.run([bin, "idle-stop", "--idle-for", "1s", "--fpm-config", f"{dir}/php-fpm.conf",
                    "--state", f"{dir}/idle.json", "--log", f"{dir}/log", "--lock", f"{dir}/lock"], check=True)
    while fpm_pids():
        time.sleep(0.01)

request()
time.sleep(0.5)
m = master()
total = sum(rss(p) for p in fpm_pids())
print(f"RSS freed by an idle stop: master {rss(m)} KiB; master and its {len(fpm_pids()) - 1} worker {total} KiB")
cold, warm = [], []
for _ in range(rounds):
    # Workers end after pm.process_idle_timeout; idle-stop looks at the master then.
    idle_stop()
    cold.append(request())
    warm.append(request())
print(f"first request after an idle stop: median {statistics.median(cold) * 1e3:.1f} ms "
      f"(min {min(cold) * 1e3:.1f}, max {max(cold) * 1e3:.1f}); warm: median {statistics.median(warm) * 1e3:.1f} ms "
      f"(min {min(warm) * 1e3:.1f}, max {max(warm) * 1e3:.1f}), {rounds} rounds, curl through nginx")
PY
echo "idle stops logged: $(grep -c 'action=idle-stop' "$dir/log")"
