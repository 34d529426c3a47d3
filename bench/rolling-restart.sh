#!/usr/bin/env bash
# Failed requests and p99 latency while php-fpm restarts under load (ab, 8 keep-alive clients):
#   rolling: two replicas behind nginx's upstream (nginx/pool-upstream.conf), `php-relaunch pools
#            restart www` three times during the load;
#   plain:   the same nginx, an upstream of one replica, restarted three times the way an init script
#            does it (QUIT, wait, start) during the same load.
# Needs root and Debian's nginx, php8.2-fpm, apache2-utils (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

requests=${REQUESTS:-20000}
install_missing nginx php8.2-fpm apache2-utils python3
bin=$(scripts/build.sh)

dir=$(mktemp -d)
chmod 755 "$dir"
trap 'kill $(cat "$dir/nginx.pid" 2>/dev/null) 2>/dev/null; for n in 1 2; do site_down "$dir/r$n"; done; rm -rf "$dir"' EXIT
mkdir -p "$dir/www"
echo '<?php echo "hello";' >"$dir/www/hello.php"
for n in 1 2; do
    mkdir -p "$dir/r$n"
    fpm_up "$dir/r$n" 4
done
sed -e "s#/run/php-relaunch/www-1.sock#$dir/r1/php-fpm.sock#" -e "s#/run/php-relaunch/www-2.sock#$dir/r2/php-fpm.sock#" \
    nginx/pool-upstream.conf >"$dir/pool-upstream.conf"
cp /etc/nginx/fastcgi_params "$dir/"
rolling=$(free_port)
plain=$(free_port)
php_location() {
    echo "location ~ \\.php\$ { include fastcgi_params; fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name; fastcgi_pass $1; fastcgi_next_upstream error timeout; fastcgi_next_upstream_tries 0; }"
}
cat >"$dir/nginx.conf" <<CONF
user www-data;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 512; }
http {
    access_log off;
    include $dir/pool-upstream.conf;
    upstream php_single { server unix:$dir/r1/php-fpm.sock max_fails=0; }
    server { listen 127.0.0.1:$rolling; root $dir/www; $(php_location php_www) }
    server { listen 127.0.0.1:$plain; root $dir/www; $(php_location php_single) }
}
CONF
/usr/sbin/nginx -c "$dir/nginx.conf"
cat >"$dir/pools.toml" <<CONF
[pools.www]
balancer = "nginx"
[[pools.www.replicas]]
fpm_bin = "$dir/r1/php-fpm"
fpm_config = "$dir/r1/php-fpm.conf"
ping = "unix://$dir/r1/php-fpm.sock;/ping"
[[pools.www.replicas]]
fpm_bin = "$dir/r2/php-fpm"
fpm_config = "$dir/r2/php-fpm.conf"
ping = "unix://$dir/r2/php-fpm.sock;/ping"
CONF
sleep 0.5

# One load run: ab in the background, the restart three times, then ab's figures.
measure() {
    local name=$1 port=$2 restart=$3
    ab -k -c 8 -n "$requests" -r "http://127.0.0.1:$port/hello.php" >"$dir/ab-$name.txt" 2>&1 &
    local ab=$!
    sleep 0.3
    for _ in 1 2 3; do $restart; sleep 0.3; done
    wait "$ab" || true
    local failed non2xx p99
    failed=$(sed -n 's/^Failed requests: *//p' "$dir/ab-$name.txt")
    non2xx=$(sed -n 's/^Non-2xx responses: *//p' "$dir/ab-$name.txt")
    p99=$(sed -n 's/^ *99% *//p' "$dir/ab-$name.txt")
    printf '%-8s %6s requests  %6s failed  %6s non-2xx  p99 %5s ms\n' \
        "$name" "$requests" "${failed:-?}" "${non2xx:-0}" "${p99:-?}"
}
rolling_restart() {
    "$bin" pools restart www --config "$dir/pools.toml" --log "$dir/pools.log" --lock "$dir/lock" >/dev/null
}
plain_restart() {
    local master
    master=$(cat "$dir/r1/php-fpm.pid")
    kill -QUIT "$master"
    while [ -e "/proc/$master" ] && [ "$(cut -d' ' -f3 "/proc/$master/stat")" != Z ]; do sleep 0.01; done
    "$dir/r1/php-fpm" --daemonize --fpm-config "$dir/r1/php-fpm.conf"
}
measure rolling "$rolling" rolling_restart
measure plain "$plain" plain_restart
