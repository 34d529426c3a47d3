#!/usr/bin/env bash
# Renders `php-relaunch report --svg` over a generated month (scripts/month-of-logs.py) to PNG, so a
# person can look at the chart: docs/report-example.svg and .png. Needs librsvg2-bin (rsvg-convert).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/build.sh)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
end=1796083200 # 2026-12-01T00:00:00Z, so the picture is the same every time
scripts/month-of-logs.py "$dir" "$end"
mkdir -p docs
TZ=UTC "$bin" report --log "$dir/log" --access-log "$dir/access.log" --since 30d \
    --until 2026-12-01T00:00:00Z --svg docs/report-example.svg
rsvg-convert docs/report-example.svg -o docs/report-example.png
echo "docs/report-example.png"
