#!/usr/bin/env bash
# Installs what building, running and testing circles needs on Debian/Ubuntu:
# redis-server (the broker; tests start their own), redis-sentinel (the
# failover tests start three; without it they run `redis-server --sentinel`,
# the same program), faketime (the clock-skew test shifts a worker's clock
# with its library), datefudge (tests restart a redis-server with its clock
# shifted: libfaketime hangs Debian's jemalloc-linked redis-server), tmux (the live-table test
# drives a real terminal), logrotate (the log-rotation tests rotate the live mode's log file with
# it), e2fsprogs (`chattr`), iproute2 (`ip netns`: the several-hosts tests put
# each orchestrator in a network namespace of its own), promtool (Debian package prometheus: the metrics
# test checks a scrape with it), and for the browser tests Debian's chromium plus
# Playwright for Python (the version pinned in cmd/tests/browser/requirements.txt)
# in a venv at <target dir>/browser-venv. Playwright never downloads a browser
# here: the tests launch /usr/bin/chromium.
# With --run, only what running the orchestrator needs: redis-server
# (`make run`).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

run_only=false
case "${1:-}" in
  "") ;;
  --run) run_only=true ;;
  *) echo "install-deps: unknown argument ${1}; usage: install-deps.sh [--run]" >&2; exit 2 ;;
esac

need=()
browser=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if ! $run_only; then
  command -v tmux >/dev/null 2>&1 || need+=(tmux)
  # logrotate: the log-rotation tests rotate the live mode's log file with it
  # (Debian installs it in /usr/sbin).
  command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ] || need+=(logrotate)
  command -v faketime >/dev/null 2>&1 || need+=(faketime)
  command -v datefudge >/dev/null 2>&1 || need+=(datefudge)
  command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  # chattr: the storage-fault test makes a data file immutable under a circle.
  command -v chattr >/dev/null 2>&1 || need+=(e2fsprogs)
  # The browser tests: Chromium with a font for screenshots (recommends left
  # out: they pull in a desktop), and a python that can make a venv.
  [ -x /usr/bin/chromium ] || browser+=(chromium fonts-liberation)
  if ! command -v python3 >/dev/null 2>&1; then
    browser+=(python3 python3-venv)
  elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    browser+=(python3-venv)
  fi
  # promtool comes with Debian's prometheus; its recommends (exporters,
  # daemons) are left out, as for the browser.
  command -v promtool >/dev/null 2>&1 || browser+=(prometheus)
fi
if [ ${#need[@]} -gt 0 ] || [ ${#browser[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing ${need[*]} ${browser[*]} and no apt-get here; install them with your package manager" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to install ${need[*]} ${browser[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "install-deps: installing ${need[*]} ${browser[*]}" >&2
  $sudo apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ ${#browser[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${browser[@]}" >/dev/null
  fi
fi

# Playwright in its own venv: no root, nothing written into the system python
# (Debian's is externally managed, PEP 668), and the same on every machine.
# It lives in the target dir; after `cargo clean` this script makes it again.
venv="${CARGO_TARGET_DIR:-target}/browser-venv"
requirements=cmd/tests/browser/requirements.txt
if ! $run_only && { ! cmp -s "$requirements" "$venv/requirements.txt" || ! [ -x "$venv/bin/python" ]; }; then
  echo "install-deps: installing Playwright for Python into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install Rust from https://rustup.rs first" >&2
  exit 1
fi
