#!/usr/bin/env bash
# Builds the Debian package, runs lintian on it, installs it on this machine, checks what it put
# there, then removes and purges it, leaving the machine as before. Run by scripts/test.sh.
# lintian warnings kept: shared-library-lacks-prerequisites (a static-pie binary looks like a
# library to it) and initial-upload-closes-no-bugs (no ITP bug: this package is built locally).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh
install_missing lintian bash-completion logrotate man-db
fail() { echo "package check: $*" >&2; exit 1; }

if dpkg -s php-relaunch >/dev/null 2>&1; then
    fail "php-relaunch is installed on this machine already; not touching it"
fi
# What a purge removes, if this machine has it already, is put back at the end.
saved=$(mktemp -d)
trap 'dpkg -P php-relaunch >/dev/null 2>&1 || true; for p in /var/log/php-relaunch.log /var/lib/php-relaunch /etc/php-relaunch; do [ -e "$saved/${p//\//_}" ] && mv "$saved/${p//\//_}" "$p"; done; rm -rf "$saved"' EXIT
for p in /var/log/php-relaunch.log /var/lib/php-relaunch /etc/php-relaunch; do
    [ -e "$p" ] && mv "$p" "$saved/${p//\//_}"
done

deb=$(scripts/package.sh)
lintian --fail-on error --suppress-tags shared-library-lacks-prerequisites,initial-upload-closes-no-bugs "$deb" 2>&1 |
    grep -v 'running with root privileges' || true
lintian --fail-on error "$deb" >/dev/null 2>&1 || fail "lintian reports errors"

dpkg -i "$deb" >/dev/null
# Outputs are taken whole before they are looked at: `grep -q` ending a pipe early would fail it.
version=$(/usr/sbin/php-relaunch --version)
[[ $version == "php-relaunch "* ]] || fail "--version says: $version"
page=$(man -w php-relaunch)
[[ $page == */man8/php-relaunch.8* ]] || fail "man -w says: $page"
warnings=$(MANWIDTH=80 man --warnings php-relaunch 2>&1 >/dev/null)
[ -z "$warnings" ] || fail "man warns: $warnings"
for command in check reset pools hook idle-stop report doctor; do
    man -w "php-relaunch-$command" >/dev/null || fail "no page for $command"
    warnings=$(MANWIDTH=80 man --warnings "php-relaunch-$command" 2>&1 >/dev/null)
    [ -z "$warnings" ] || fail "man php-relaunch-$command warns: $warnings"
done
completion=$(bash -c '. /usr/share/bash-completion/bash_completion; __load_completion php-relaunch; complete -p php-relaunch' 2>/dev/null || true)
[[ $completion == *" php-relaunch" ]] || fail "bash completion: $completion"
systemd-analyze verify /lib/systemd/system/php-relaunch.service /lib/systemd/system/php-relaunch.timer ||
    fail "systemd-analyze verify"
rules=$(logrotate -d /etc/logrotate.d/php-relaunch 2>&1) || fail "logrotate -d: $rules"
[[ $rules == *"/var/log/php-relaunch.log"* ]] || fail "logrotate -d: $rules"
active=$(grep -v '^\s*#' /etc/cron.d/php-relaunch || true)
[ -z "${active//[[:space:]]/}" ] || fail "a cron line is active after install: $active"
[ -e /etc/systemd/system/timers.target.wants/php-relaunch.timer ] && fail "the timer is enabled"
# The drop-in name (#22): a link dpkg owns, answering as the original does (111: refused, 3: bad option).
[ "$(readlink -f /usr/bin/php-fpm-healthcheck)" = /usr/sbin/php-relaunch ] || fail "no php-fpm-healthcheck link"
dpkg -S /usr/bin/php-fpm-healthcheck >/dev/null || fail "dpkg does not own /usr/bin/php-fpm-healthcheck"
page=$(man -w php-fpm-healthcheck)
[[ $page == */man1/php-fpm-healthcheck.1* ]] || fail "man -w php-fpm-healthcheck says: $page"
warnings=$(MANWIDTH=80 man --warnings php-fpm-healthcheck 2>&1 >/dev/null)
[ -z "$warnings" ] || fail "man php-fpm-healthcheck warns: $warnings"
code=0
FCGI_CONNECT=127.0.0.1:9 php-fpm-healthcheck --timeout=2 2>/dev/null || code=$?
[ "$code" = 111 ] || fail "php-fpm-healthcheck against nothing exited $code, not 111"
code=0
php-fpm-healthcheck --no-such-option 2>/dev/null || code=$?
[ "$code" = 3 ] || fail "php-fpm-healthcheck with a bad option exited $code, not 3"

# A run leaves a log line and a state file; removal keeps them, purge takes them.
code=0
/usr/sbin/php-relaunch http://127.0.0.1:9/heartbeat.php 1 || code=$?
[ "$code" = 4 ] || fail "a run against nothing exited $code, not 4"
[ -s /var/log/php-relaunch.log ] && [ -d /var/lib/php-relaunch ] || fail "no log or state after a run"
# The rule rotates it, and the next run writes a fresh log: each run opens the log anew.
rotation=$(mktemp)
logrotate -f -s "$rotation" /etc/logrotate.d/php-relaunch
rm -f "$rotation"
[ -s /var/log/php-relaunch.log.1 ] && [ ! -s /var/log/php-relaunch.log ] || fail "logrotate did not rotate the log"
/usr/sbin/php-relaunch http://127.0.0.1:9/heartbeat.php 1 || true
[ "$(wc -l </var/log/php-relaunch.log)" = 1 ] || fail "the run after rotation did not start a new log"
dpkg -r php-relaunch >/dev/null
[ ! -e /usr/sbin/php-relaunch ] || fail "dpkg -r left the binary"
[ ! -L /usr/bin/php-fpm-healthcheck ] || fail "dpkg -r left the php-fpm-healthcheck link"
[ ! -e /usr/share/man/man1/php-fpm-healthcheck.1.gz ] || fail "dpkg -r left the php-fpm-healthcheck page"
[ -s /var/log/php-relaunch.log ] && [ -d /var/lib/php-relaunch ] || fail "dpkg -r took the log or state"
dpkg -P php-relaunch >/dev/null
for p in /etc/cron.d/php-relaunch /etc/logrotate.d/php-relaunch /etc/php-relaunch /var/log/php-relaunch.log /var/lib/php-relaunch; do
    [ ! -e "$p" ] || fail "dpkg -P left $p"
done
# The drop-in's name is gone with the package.
for p in /usr/bin/php-fpm-healthcheck /usr/share/man/man1/php-fpm-healthcheck.1.gz; do
    [ ! -L "$p" ] && [ ! -e "$p" ] || fail "dpkg -P left $p"
done
echo "package check: $deb installs, works, is watched by nothing, and removes cleanly"
