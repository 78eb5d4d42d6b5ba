#!/usr/bin/env bash
# An S3-compatible server on 127.0.0.1 for weir's object-store tests: moto
# (PyPI `moto[server]`), which honours the conditional puts weir commits
# checkpoints with (`If-None-Match: *`).
#
#   scripts/s3.sh install
#       makes a Python venv with moto in the tools dir, once; prints the
#       venv's python on its last line.
#   scripts/s3.sh run PORT
#       runs the server on 127.0.0.1:PORT in the foreground (exec: the
#       caller's child *is* the server, so it is stopped by its PID).
#   scripts/s3.sh start [PORT]
#       runs it in the background for a session by hand; prints the
#       environment a job needs and `pid=N`. Stop it with `kill N`.
#
# The tools dir is ${WEIR_TOOLS_DIR:-/var/tmp/weir-tools}: outside the clone,
# so CI runs on one machine share one install.
set -euo pipefail

moto_version="5.2.5"
tools="${WEIR_TOOLS_DIR:-/var/tmp/weir-tools}"
venv="$tools/moto-$moto_version"

installed() { [ -f "$venv/.complete" ]; }

install() {
  if installed; then echo "$venv/bin/python"; return; fi
  mkdir -p "$tools"
  # Several test binaries may race to install: serialise them.
  exec 9>"$tools/.moto-install.lock"
  flock 9
  if ! installed; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >"$tools/moto-install.log" 2>&1 ||
      ! "$venv/bin/pip" install -q "moto[server]==$moto_version" >>"$tools/moto-install.log" 2>&1; then
      cat "$tools/moto-install.log" >&2
      echo "s3.sh: could not install moto[server]==$moto_version (needs python3 with venv, and PyPI)" >&2
      exit 1
    fi
    touch "$venv/.complete"
  fi
  echo "$venv/bin/python"
}

case "${1:-}" in
  install) install ;;
  run)
    port="${2:?usage: s3.sh run PORT}"
    python="$(install | tail -n 1)"
    exec "$python" -m moto.server -H 127.0.0.1 -p "$port"
    ;;
  start)
    port="${2:-9000}"
    python="$(install | tail -n 1)"
    nohup "$python" -m moto.server -H 127.0.0.1 -p "$port" >"$tools/moto-$port.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
      sleep 0.1
    done
    echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ALLOW_HTTP=true AWS_REGION=us-east-1" \
      "AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
    echo "(create a bucket: curl -X PUT http://127.0.0.1:$port/BUCKET)"
    echo "pid=$pid"
    ;;
  *)
    echo "usage: scripts/s3.sh install | run PORT | start [PORT]" >&2
    exit 2
    ;;
esac
