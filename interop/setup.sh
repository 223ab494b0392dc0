#!/usr/bin/env bash
# Creates a git-ignored venv with one of the two version sets the interop scripts run under (interop/README.md):
#   bash interop/setup.sh            # interop/.venv          from interop/requirements.txt          ("pinned")
#   bash interop/setup.sh current    # interop/.venv-current  from interop/requirements-current.txt  ("current")
# The pinned set makes the reference fixtures; the current set checks today's releases against them. The current
# set is a lock installed without dependency resolution (its header says why).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
case "${1:-pinned}" in
  pinned) venv="$here/.venv" reqs="$here/requirements.txt" flags=() ;;
  current) venv="$here/.venv-current" reqs="$here/requirements-current.txt" flags=(--no-deps) ;;
  vision) venv="$here/.venv-vision" reqs="$here/requirements-vision.txt" flags=() ;;
  *) echo "usage: bash interop/setup.sh [pinned|current|vision]" >&2; exit 2 ;;
esac
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "${flags[@]}" -r "$reqs"
