#!/usr/bin/env bash
# One-time set-up of a fresh machine: the Debian tools the tests and the local Scaleway use, the
# compiler toolchain `npm ci` needs, and the npm packages. Safe to run again; it installs only what is
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
# node-gyp compiles zstd-napi (when no prebuilt binding downloads) and argon2 (whose linux-x64
# prebuild needs Node-API 10, i.e. Node >= 22.14) at `npm ci`.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages (npm ci; 2-3 minutes the first time: it compiles zstd-napi and argon2)" >&2
  # Errors only: npm 11's notes on dev tools' engines and install scripts are not for the user to act on.
  npm ci --no-audit --no-fund --loglevel=error
fi
