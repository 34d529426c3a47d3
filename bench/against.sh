#!/usr/bin/env bash
# This tree's checks head to head with an earlier revision's, interleaved (bench/interleaved.py), so
# that the machine's drift touches both alike: a healthy classic run through nginx, the same run over
# FastCGI, a healthy FastCGI `check`, and /bin/true, against a private php-fpm and nginx on loopback.
# Both builds are static release builds (scripts/build.sh) run from the same directory. Needs root,
# git, and Debian's nginx and php8.2-fpm (installed if missing).
#   bench/against.sh REV [ROUNDS]      e.g. bench/against.sh HEAD~5 3000
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/loopback-site.sh

rev=${1:?usage: bench/against.sh REV [ROUNDS]}
rounds=${2:-3000}
install_missing nginx php8.2-fpm python3
new=$(scripts/build.sh)
old_tree=$(mktemp -d)
git worktree add --quiet --detach "$old_tree/src" "$rev"
trap 'git worktree remove --force "$old_tree/src"; rm -rf "$old_tree"' EXIT
old=$(cd "$old_tree/src" && CARGO_TARGET_DIR="$old_tree/target" scripts/build.sh)
old=${old/#$old_tree\/src\/target/$old_tree/target}

temp_site
# temp_site's own trap replaced ours: tear down both.
trap 'site_down "$dir"; rm -rf "$dir"; git worktree remove --force "$old_tree/src"; rm -rf "$old_tree"' EXIT
cp "$old" "$dir/old"
cp "$new" "$dir/new"
sock=$dir/php-fpm.sock
for which in old new; do
    # Healthy, or the figures mean nothing.
    "$dir/$which" "$url" 5 --log "$dir/log" --lock "$dir/lock" --state "$dir/$which.json" \
        --fpm-bin "$dir/php-fpm" --fpm-config "$dir/php-fpm.conf"
    "$dir/$which" "unix://$sock;/ping" 2 --log "$dir/log" --lock "$dir/lock" \
        --state "$dir/$which-fcgi.json" --fpm-bin "$dir/php-fpm" --fpm-config "$dir/php-fpm.conf"
    "$dir/$which" check "unix://$sock;/ping" 2 >/dev/null
done
run() {
    echo "$dir/$1 $url 5 --log $dir/log --lock $dir/lock --state $dir/$1.json --fpm-bin $dir/php-fpm --fpm-config $dir/php-fpm.conf"
}
# The same php-fpm asked over FastCGI, its answer believed as #18 and #21 believe it (a verified
# master holding the socket that answered).
fastcgi() {
    echo "$dir/$1 unix://$sock;/ping 2 --log $dir/log --lock $dir/lock --state $dir/$1-fcgi.json --fpm-bin $dir/php-fpm --fpm-config $dir/php-fpm.conf"
}
echo "against $(git rev-parse --short "$rev"):"
/usr/bin/python3 bench/interleaved.py "$rounds" \
    "run, $rev=$(run old)" \
    "run, this tree=$(run new)" \
    "FastCGI run, $rev=$(fastcgi old)" \
    "FastCGI run, this tree=$(fastcgi new)" \
    "check, $rev=$dir/old check unix://$sock;/ping 2" \
    "check, this tree=$dir/new check unix://$sock;/ping 2" \
    "/bin/true=/bin/true"
