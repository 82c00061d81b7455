#!/usr/bin/env bash
# The benchmark in one command: installs wrk and nginx (Debian packages) when missing, makes the project's
# venv when missing, then runs bench/run.py with every argument given here (see `bench/run.sh --help`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing+=(nginx)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bench: installing ${missing[*]} from Debian's packages" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/modeldex" ]; then
    echo "bench: creating $venv and installing modeldex into it" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -e "$root"
fi

exec "$venv/bin/python" "$here/run.py" "$@"
