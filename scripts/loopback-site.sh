# Sourced by scripts/demo.sh and bench/healthy-check.sh: a private php-fpm and nginx on loopback.
#
# site_up DIR PORT   php-fpm from a copy of Debian's binary (so Debian's init script never touches it),
#                    own config, socket and pid file in DIR; nginx serving the project's heartbeat vhost
#                    and allow-list on 127.0.0.1:PORT.
# site_down DIR      ends exactly the processes site_up started, stopped ones included.
# temp_site          site_up in a fresh temporary directory on a free port, torn down at exit;
#                    sets dir, port and url (the heartbeat page).

project_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# fpm_up DIR [CHILDREN]: a private php-fpm (binary copy, config, socket, pid file, log) in DIR.
fpm_up() {
    local dir=$1 children=${2:-2}
    chmod 755 "$dir"
    cp /usr/sbin/php-fpm8.2 "$dir/php-fpm"
    cat >"$dir/php-fpm.conf" <<CONF
[global]
pid = $dir/php-fpm.pid
error_log = $dir/php-fpm.log

[www]
user = www-data
group = www-data
listen = $dir/php-fpm.sock
listen.owner = www-data
listen.group = www-data
pm = static
pm.max_children = $children
ping.path = /ping
pm.status_path = /status
CONF
    "$dir/php-fpm" --daemonize --fpm-config "$dir/php-fpm.conf"
}

site_up() {
    local dir=$1 port=$2
    fpm_up "$dir"

    mkdir -p "$dir/www"
    cp "$project_root/nginx/php-heartbeat.php" "$dir/www/"
    echo '<?php sleep((int)($_GET["s"] ?? 30));' >"$dir/www/sleep.php"
    cp "$project_root/nginx/heartbeat-allow.conf" /etc/nginx/fastcgi_params "$dir/"
    sed -e "s/:8889;/:$port;/" \
        -e "s#root /var/www/heartbeat;#root $dir/www;#" \
        -e "s#unix:/run/php/php8.2-fpm.sock#unix:$dir/php-fpm.sock#" \
        "$project_root/nginx/heartbeat.conf" >"$dir/heartbeat.conf"
    cat >"$dir/nginx.conf" <<CONF
user www-data;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 64; }
http {
    include $dir/heartbeat-allow.conf;
    include $dir/heartbeat.conf;
}
CONF
    /usr/sbin/nginx -c "$dir/nginx.conf"
}

# Pids whose executable is $1.
pids_of_exe() {
    local proc
    for proc in /proc/[0-9]*; do
        [ "$(readlink "$proc/exe" 2>/dev/null)" = "$1" ] && echo "${proc#/proc/}"
    done
}

# front_up DIR NAME PORT SOCKET HTTP-LINE: an nginx (config DIR/NAME.conf, pid DIR/NAME.pid) on
# 127.0.0.1:PORT serving DIR/www's PHP pages through php-fpm at SOCKET, with HTTP-LINE added at
# http {} level (an include, or `access_log off;`).
front_up() {
    local dir=$1 name=$2 port=$3 socket=$4 extra=$5
    cp /etc/nginx/fastcgi_params "$dir/"
    cat >"$dir/$name.conf" <<CONF
user www-data;
worker_processes 1;
pid $dir/$name.pid;
error_log $dir/$name-error.log;
events { worker_connections 1024; }
http {
    $extra
    server {
        listen 127.0.0.1:$port;
        root $dir/www;
        location ~ \.php\$ {
            include $dir/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_pass unix:$socket;
        }
    }
}
CONF
    /usr/sbin/nginx -c "$dir/$name.conf"
}

site_down() {
    local dir=$1 pid
    if [ -f "$dir/nginx.pid" ]; then
        kill "$(cat "$dir/nginx.pid")" 2>/dev/null
    fi
    for pid in $(pids_of_exe "$dir/php-fpm"); do
        kill -CONT "$pid" 2>/dev/null
        kill -KILL "$pid" 2>/dev/null
    done
}

temp_site() {
    dir=$(mktemp -d)
    trap 'site_down "$dir"; rm -rf "$dir"' EXIT
    port=$(free_port)
    site_up "$dir" "$port"
    url=http://127.0.0.1:$port/php-heartbeat.php
}

# A TCP port nobody listens on now.
free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Installs the Debian packages named, those missing only.
install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    # Services the packages bring are installed, not started nor enabled: the tests run private
    # instances, and a test host must not be left serving Apache on port 80 beside its nginx. A
    # policy-rc.d of the host's own is respected (and kept).
    local before own_policy=0 service
    before=$(ls /etc/init.d 2>/dev/null || true)
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        own_policy=1
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || {
        [ $own_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
        return 1
    }
    [ $own_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
    for service in $(comm -13 <(echo "$before" | sort) <(ls /etc/init.d | sort)); do
        update-rc.d "$service" disable >/dev/null 2>&1 || true
        deb-systemd-helper disable "$service.service" >/dev/null 2>&1 || true
    done
}
