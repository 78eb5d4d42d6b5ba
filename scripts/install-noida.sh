#!/usr/bin/env bash
# Installs the noida-db Kafka-protocol broker (a prebuilt binary shipped in a
# PyPI wheel) for the Kafka integration tests, into a tools dir outside the
# clone so repeated CI runs on the same machine reuse it. Idempotent.
# Prints the binary's path on its last line.
set -euo pipefail

version=0.2.3
tools="${WEIR_TOOLS_DIR:-/var/tmp/weir-tools}"
bin="$tools/noida_db/noida-db"

works() {
  [ -x "$bin" ] && "$bin" version 2>/dev/null | grep -qF "noida-db $version"
}

if ! works; then
  mkdir -p "$tools"
  # Several test processes may race to install: serialise them.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$tools/.install.lock"
    flock 9
  fi
fi

if ! works; then
  # A bare Debian 12 has python3 but not pip: bring it from Debian's packages.
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
  fi
  dl="$(mktemp -d "$tools/.download.XXXXXX")"
  trap 'rm -rf "$dl"' EXIT
  if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    "noida-db==$version" -d "$dl" >"$dl/pip.log" 2>&1; then
    cat "$dl/pip.log" >&2
    echo "install-noida: pip download of noida-db==$version failed" >&2
    exit 1
  fi
  wheel="$(ls "$dl"/noida_db-"$version"-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$wheel" ]; then
    ls -la "$dl" >&2
    echo "install-noida: no noida_db-$version wheel in $dl" >&2
    exit 1
  fi
  rm -rf "$tools/noida_db"
  python3 -m zipfile -e "$wheel" "$dl/unpacked"
  mv "$dl/unpacked/noida_db" "$tools/noida_db"
  chmod +x "$bin"
  if ! works; then
    "$bin" version >&2 || true
    echo "install-noida: $bin does not run" >&2
    exit 1
  fi
  echo "install-noida: installed noida-db $version" >&2
fi

echo "$bin"
