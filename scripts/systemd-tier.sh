#!/usr/bin/env bash
# The systemd tier: runs scenarios under a real systemd 252, booted in a container, with the package's
# units as shipped. Builds (once, cached under target/systemd-tier/, keyed on what goes in) a Debian 12
# root with php8.2-fpm and nginx, builds the .deb (scripts/package.sh), then for each scenario boots
# a fresh copy of that root (`--volatile=overlay`: nothing a scenario does survives it), installs the
# .deb, runs the scenario inside through nsenter, and tears the container down, also on failure or
# Ctrl-C. Exits 1 if any scenario failed. Needs root, systemd-container and debootstrap (installed if
# missing), and the network only for the first build.
#
#   scripts/systemd-tier.sh [SCENARIO…]     # default: every scenario in scripts/systemd-scenarios.sh
#   scripts/systemd-tier.sh --build-root    # only build (or find) the cached root
#
# Never run it beside tests that stop or restart the host's php8.2-fpm service: Debian's init script
# stops every php-fpm8.2 process on the machine, the container's included.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "systemd tier: run as root" >&2; exit 2; }
for tool in systemd-nspawn:systemd-container debootstrap:debootstrap; do
    command -v "${tool%%:*}" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null
done

tier=$PWD/target/systemd-tier
mkdir -p "$tier"
# What the root holds; changing this list, or this script, builds a new one.
packages=(php8.2-fpm nginx curl procps iproute2 ca-certificates)

# The Debian mirror apt already uses on this machine: the tier names no host of its own.
mirror() {
    apt-get indextargets --format '$(REPO_URI)' 'Codename: bookworm' 'Created-By: Packages' | head -1
}

# Builds a Debian 12 root at $1: debootstrap, then the packages installed inside it (not booted) behind a
# policy-rc.d that starts nothing, so no daemon ever runs on the host during the build.
build_root() {
    local root=$1 url
    url=$(mirror)
    [ -n "$url" ] || { echo "systemd tier: no bookworm mirror in apt's configuration" >&2; return 1; }
    debootstrap --variant=minbase --include=systemd,dbus,systemd-sysv bookworm "$root" "$url" >"$root.log" 2>&1 ||
        { tail -20 "$root.log" >&2; return 1; }
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    systemd-nspawn --quiet --register=no --keep-unit -D "$root" \
        env DEBIAN_FRONTEND=noninteractive sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${packages[*]} && apt-get clean" \
        >>"$root.log" 2>&1 || { tail -20 "$root.log" >&2; return 1; }
    rm -f "$root/usr/sbin/policy-rc.d"
    # The machine id is made at each boot (volatile), and the console stays quiet.
    : >"$root/etc/machine-id"
    rm -f "$root.log"
}

key=$( { printf '%s\n' "${packages[@]}"; declare -f build_root; } | sha256sum | cut -c1-16)
root=$tier/root-$key
if [ ! -d "$root" ]; then
    started=$SECONDS
    echo "systemd tier: building the Debian 12 root (once; a few minutes)…" >&2
    rm -rf "$tier"/root-* "$tier"/build-*
    build=$tier/build-$key
    build_root "$build"
    mv "$build" "$root"
    echo "systemd tier: root built in $((SECONDS - started)) s" >&2
fi

[ "${1:-}" != --build-root ] || { echo "$root"; exit 0; }

deb=$(scripts/package.sh)
share=$(mktemp -d)
cp "$deb" "$share/php-relaunch.deb"; [ -z "${TIER_EXTRA:-}" ] || cp $TIER_EXTRA "$share/"
chmod 755 "$share"

source scripts/systemd-scenarios.sh

nspawn_pid=
machine=
# Ends the container (a clean poweroff, then SIGKILL to its process group) and checks nothing is left.
teardown() {
    [ -n "$nspawn_pid" ] || return 0
    if kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$nspawn_pid" 2>/dev/null || true
    fi
    wait "$nspawn_pid" 2>/dev/null || true
    nspawn_pid=
    local left
    left=$(grep -F " $root" /proc/self/mounts || true)
    [ -z "$left" ] || echo "systemd tier: mounts left behind: $left" >&2
    rmdir "/run/systemd/nspawn/unix-export/$machine" 2>/dev/null || true
    # nspawn (--keep-unit) makes a `payload` cgroup below ours and leaves it behind, empty. rmdir
    # removes only empty cgroups, so another container's is never touched.
    local cg
    for cg in "/sys/fs/cgroup/unified$(sed -n 's/^0:://p' /proc/self/cgroup)" \
        "/sys/fs/cgroup/systemd$(sed -n 's/^[0-9]*:name=systemd://p' /proc/self/cgroup)" \
        "/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)"; do
        [ -d "${cg%/}/payload" ] && find "${cg%/}/payload" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}
cleanup() { teardown; rm -rf "$share"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Boots a fresh container from the cached root, waits for systemd to be running, installs the .deb.
# Sets $init (the container's PID 1, as the host sees it).
boot() {
    machine=php-relaunch-tier-$$-${1//_/-}
    local console=$share/$1.console
    setsid systemd-nspawn --quiet --register=no --keep-unit --private-network -M "$machine" -D "$root" \
        --volatile=overlay --bind-ro="$share:/mnt/tier" -b >"$console" 2>&1 </dev/null &
    nspawn_pid=$!
    init=
    for _ in $(seq 100); do
        init=$(container_init "$nspawn_pid") && break
        sleep 0.1
    done
    [ -n "$init" ] || { cat "$console" >&2; echo "no container init" >&2; return 1; }
    # The init found may still be nspawn's stub before it execs systemd: wait for systemd's bus.
    local state=
    for _ in $(seq 300); do
        state=$(timeout 60 nsenter -t "$init" -a systemctl is-system-running --wait 2>/dev/null || true)
        [ -z "$state" ] || break
        sleep 0.1
    done
    if [ "$state" != running ]; then
        echo "system state '$state'; failed units:" >&2
        inside systemctl --failed --no-legend >&2 || true
        return 1
    fi
    inside env DEBIAN_FRONTEND=noninteractive dpkg -i /mnt/tier/php-relaunch.deb >/dev/null
}

# The descendant of nspawn that is PID 1 in its own pid namespace.
container_init() {
    local pid ns
    for pid in $(ps -o pid= --ppid "$1") $(ps -e -o pid=,ppid= | awk -v p="$1" '$2==p {print $1}' | xargs -r -n1 ps -o pid= --ppid); do
        ns=$(awk '/^NSpid:/ {print $NF}' "/proc/$pid/status" 2>/dev/null || true)
        # nspawn's child is PID 1 in the new namespace before it execs systemd: wait for that.
        [ "$ns" = 1 ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] && { echo "$pid"; return 0; }
    done
    return 1
}

# Runs a command inside the container (all its namespaces, its root).
inside() { nsenter -t "$init" -a "$@"; }

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=("${SCENARIOS[@]}")
failed=()
for name in "${scenarios[@]}"; do
    started=$SECONDS
    declare -F "scenario_$name" >/dev/null || { echo "systemd tier: no scenario $name (${SCENARIOS[*]})" >&2; exit 2; }
    echo "---- $name" >&2
    if boot "$name" && ( "scenario_$name" && units_as_shipped ); then
        echo "ok   $name ($((SECONDS - started)) s)"
    else
        echo "FAIL $name ($((SECONDS - started)) s)"
        failed+=("$name")
    fi
    teardown
done
[ ${#failed[@]} = 0 ] || { echo "systemd tier: failed: ${failed[*]}" >&2; exit 1; }
echo "systemd tier: ${#scenarios[@]} scenarios passed"
