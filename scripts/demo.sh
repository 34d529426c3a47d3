#!/usr/bin/env bash
# Builds php-relaunch and shows it keeping a real php-fpm alive, on loopback, as root, on Debian 12:
# a healthy check, a stopped php-fpm, a hung (SIGSTOPped) php-fpm, and nginx down. Uses a private
# php-fpm and nginx in a fresh temporary directory; the system's own services are not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

install_missing nginx php8.2-fpm curl python3
bin=$(scripts/build.sh)

temp_site
relaunch() {
    local code=0
    "$bin" "$url" "$@" --fpm-bin "$dir/php-fpm" --fpm-config "$dir/php-fpm.conf" \
        --log "$dir/php-relaunch.log" --lock "$dir/php-relaunch.lock" --state "$dir/state.json" || code=$?
    echo "  exit code $code; log: $(tail -n 1 "$dir/php-relaunch.log" 2>/dev/null || true)"
    : >"$dir/php-relaunch.log"
    # Each step is its own story: forget the last relaunch, or its 10 s cooldown would hold back the next.
    rm -f "$dir/state.json"
}

echo "1. healthy heartbeat ($(curl -s -o /dev/null -w '%{http_code}' "$url")): php-relaunch $url 5"
relaunch 5
echo "2. php-fpm stopped, nginx answers $(kill "$(cat "$dir/php-fpm.pid")"; sleep 0.3; curl -s -o /dev/null -w '%{http_code}' "$url"): relaunch"
relaunch 5
echo "3. php-fpm hung (master and workers SIGSTOPped): a 2 s timeout, then SIGKILL and start"
for pid in $(pids_of_exe "$dir/php-fpm"); do kill -STOP "$pid"; done
relaunch 2
echo "4. nginx down: php-fpm is left alone"
kill "$(cat "$dir/nginx.pid")"
sleep 0.3
relaunch 5
echo "php-fpm master $(cat "$dir/php-fpm.pid") was left running"
