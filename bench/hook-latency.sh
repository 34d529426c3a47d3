#!/usr/bin/env bash
# How fast `php-relaunch hook` brings a stopped php-fpm back, against a private php-fpm and a front
# nginx on loopback that reports its 502s through the shipped nginx/hook.conf (needs root and
# Debian's nginx and php8.2-fpm, installed if missing):
#   1. from the first 502 a client sees to its first 200 after the relaunch, php-fpm stopped (SIGTERM
#      to its master) ROUNDS times (default 20), 11 s apart (the recovery window after a relaunch);
#   2. the hook's CPU while idle for 10 s, and its RSS;
#   3. its RSS before and after a day's worth of datagrams (1,000,000, most of them not events).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

rounds=${ROUNDS:-20}
install_missing nginx php8.2-fpm curl python3
bin=$(scripts/build.sh)

temp_site
front_port=$(free_port)
sed "s#/run/php-relaunch/hook.sock#$dir/hook.sock#" nginx/hook.conf >"$dir/hook.conf"
echo '<?php echo "hello";' >"$dir/www/hello.php"
front_up "$dir" front "$front_port" "$dir/php-fpm.sock" "include $dir/hook.conf;"
"$bin" hook --listen "$dir/hook.sock" "$url" 5 --log "$dir/log" --lock "$dir/lock" \
    --state "$dir/state.json" --fpm-bin "$dir/php-fpm" --fpm-config "$dir/php-fpm.conf" \
    --max-restarts 1000 2>"$dir/hook.err" &
hook=$!
trap 'kill $hook 2>/dev/null; kill $(cat "$dir/front.pid" 2>/dev/null) 2>/dev/null; site_down "$dir"; rm -rf "$dir"' EXIT
sleep 0.5

/usr/bin/python3 - "$dir" "$front_port" "$hook" "$rounds" <<'PY'
import os, signal, socket, statistics, sys, time
dir, port, hook, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def status():
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /hello.php HTTP/1.0\r\nHost: x\r\n\r\n")
            return int(s.recv(12)[9:12])
    except OSError:
        return 0

def master():
    with open(f"{dir}/php-fpm.pid") as f:
        return int(f.read())

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])

times = []
for _ in range(rounds):
    pid = master()
    os.kill(pid, signal.SIGTERM)
    while os.path.exists(f"/proc/{pid}"):
        time.sleep(0.005)
    first_502 = None
    while True:
        code = status()
        now = time.perf_counter()
        if code == 502 and first_502 is None:
            first_502 = now
        if code == 200 and first_502 is not None:
            times.append(now - first_502)
            break
        if first_502 is not None and now - first_502 > 30:
            sys.exit("no 200 within 30 s of the first 502")
        time.sleep(0.002)
    time.sleep(11)
times.sort()
print(f"first 502 to first 200, {rounds} rounds: median {statistics.median(times) * 1e3:.0f} ms, "
      f"min {times[0] * 1e3:.0f} ms, max {times[-1] * 1e3:.0f} ms")

before = cpu_ticks(hook)
time.sleep(10)
print(f"hook idle for 10 s: {cpu_ticks(hook) - before} clock ticks of CPU; RSS {rss_kib(hook)} KiB")

rss = rss_kib(hook)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setblocking(True)
sent = 0
lines = [b"status=200 upstream=- uri=/", b"garbage", b"<190>Nov 29 22:34:36 php_relaunch: status=502 upstream=- uri=/"]
for i in range(1_000_000):
    s.sendto(lines[0] if i % 100 else lines[1 + (i // 100) % 2], f"{dir}/hook.sock")
    sent += 1
time.sleep(1)
print(f"RSS before {sent:,} datagrams: {rss} KiB, after: {rss_kib(hook)} KiB")
PY
echo "log lines: $(wc -l <"$dir/log"), of them relaunches: $(grep -vc 'action=none' "$dir/log" || true)"
