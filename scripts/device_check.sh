#!/usr/bin/env bash
# The prepared GPU check (tools/device_check.py) under an 8-minute limit; the table goes to stdout and to
# $OUT/device_check.{txt,json} when OUT is set (a device machine's result folder), else ./device_check.*.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${OUT:-.}"
mkdir -p "$dest"
timeout 480 python tools/device_check.py --json "$dest/device_check.json" "$@" | tee "$dest/device_check.txt"
