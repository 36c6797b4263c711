#!/usr/bin/env bash
# Creates (or reuses) the virtualenv holding the Python tools the tests run, installs
# tests/ci/requirements.txt into it, and prints the venv's bin directory on stdout.
#
#   FERRULE_TOOLS_VENV   where the venv lives (default: ~/.cache/ferrule/venv)
#
# Idempotent: when the venv already holds exactly this requirements file (its hash is
# stamped in the venv), nothing is downloaded. Tests find the tools through
# FERRULE_TOOLS_BIN (tests/run.sh exports it) or, failing that, this default location.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/requirements.txt"
venv="${FERRULE_TOOLS_VENV:-$HOME/.cache/ferrule/venv}"
python="${PYTHON:-python3}"

stamp="$venv/.ferrule-requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
  echo "python-tools.sh: creating $venv" >&2
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >&2
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "python-tools.sh: installing $(grep -cv '^\s*\(#\|$\)' "$req") pinned tools" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$want" >"$stamp"
fi
echo "$venv/bin"
