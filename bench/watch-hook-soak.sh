#!/usr/bin/env bash
# What a long-lived `hook --watch` keeps (#21): EVENTS (default 9000) 502 events fed to one hook
# process on stdin with `--hold 0` (one `watch` run each), against a private php-fpm of 5 pools on
# loopback, its threads, open fds and resident memory sampled every 1,500 events. Needs root and
# Debian's php8.2-fpm (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

events=${EVENTS:-9000}
install_missing php8.2-fpm
bin=$(scripts/build.sh)
dir=$(mktemp -d)
chmod 755 "$dir"
hook=
cleanup() {
    [ -n "$hook" ] && kill "$hook" 2>/dev/null || true
    [ -f "$dir/m.pid" ] && kill -9 "$(cat "$dir/m.pid")" 2>/dev/null || true
    for proc in /proc/[0-9]*; do
        [ "$(readlink "$proc/exe" 2>/dev/null)" = "$dir/php-fpm" ] && kill -9 "${proc#/proc/}" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT

cp /usr/sbin/php-fpm8.2 "$dir/php-fpm"
printf '[global]\npid = %s/m.pid\nerror_log = %s/m.log\ndaemonize = yes\n' "$dir" "$dir" >"$dir/m.conf"
for p in 1 2 3 4 5; do
    printf '\n[p%s]\nuser = www-data\ngroup = www-data\nlisten = %s/p%s.sock\nlisten.owner = www-data\npm = static\npm.max_children = 1\nping.path = /ping\n' \
        "$p" "$dir" "$p" >>"$dir/m.conf"
done
"$dir/php-fpm" --daemonize --fpm-config "$dir/m.conf"
until [ -S "$dir/p5.sock" ]; do sleep 0.1; done
cat >"$dir/watch.toml" <<TOML
timeout = 2
state_dir = "$dir/state"
pause_file = "$dir/pause"
[discover]
fpm_configs = ["$dir/m.conf"]
fpm_bin = "$dir/php-fpm"
TOML
mkfifo "$dir/in"
"$bin" hook --stdin --watch "$dir/watch.toml" --hold 0 --log "$dir/log" <"$dir/in" >/dev/null 2>"$dir/err" &
hook=$!
exec 3>"$dir/in"
for i in $(seq 1 "$events"); do
    echo "status=502 upstream=- uri=/" >&3
    sleep 0.003
    if [ $((i % 1500)) = 0 ]; then
        echo "events=$i threads=$(awk '/^Threads/{print $2}' "/proc/$hook/status")" \
            "fds=$(ls "/proc/$hook/fd" | wc -l) rss_kb=$(awk '/^VmRSS/{print $2}' "/proc/$hook/status")"
    fi
done
exec 3>&-
wait "$hook" || true
hook=
echo "runs logged: $(wc -l <"$dir/log")"
