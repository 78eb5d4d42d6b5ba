#!/usr/bin/env bash
# An Azure Blob Storage emulator on 127.0.0.1 for weir's az:// checkpoint
# tests: Azurite (npm `azurite`), which honours the conditional puts weir
# commits checkpoints with (`If-None-Match: *`). Data lives in memory.
#
#   scripts/azurite.sh install
#       installs Azurite and @azure/storage-blob (to create containers) with
#       `npm ci` from tools/azurite/package-lock.json into the tools dir, once;
#       prints the install dir on its last line. Needs Node >= 18.
#   scripts/azurite.sh run PORT
#       runs the blob service on 127.0.0.1:PORT in the foreground (exec: the
#       caller's child *is* the server, so it is stopped by its PID).
#   scripts/azurite.sh container PORT NAME
#       creates container NAME (the emulator's well-known dev account).
#   scripts/azurite.sh start [PORT]
#       runs it in the background for a session by hand, creates container
#       `weir`; prints the environment a job needs and `pid=N`. Stop it with
#       `kill N`.
#
# The tools dir is ${WEIR_TOOLS_DIR:-/var/tmp/weir-tools}: outside the clone,
# so CI runs on one machine share one install.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$here/tools/azurite/package-lock.json"
tools="${WEIR_TOOLS_DIR:-/var/tmp/weir-tools}"
# One install per lock file: a changed lock installs afresh.
dir="$tools/azurite-$(sha256sum "$lock" | cut -c1-12)"

installed() { [ -f "$dir/.complete" ]; }

install() {
  if installed; then echo "$dir"; return; fi
  local major
  major="$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/')"
  if [ -z "$major" ] || [ "$major" -lt 18 ]; then
    echo "azurite.sh: Azurite needs Node >= 18 (found: $(node --version 2>/dev/null || echo none))" >&2
    exit 1
  fi
  mkdir -p "$tools"
  # Several test binaries may race to install: serialise them (in a
  # subshell, so that no server started after it inherits the lock).
  (
    flock 9
    if ! installed; then
      rm -rf "$dir"
      mkdir -p "$dir"
      cp "$here/tools/azurite/package.json" "$lock" "$dir/"
      if ! npm ci --prefix "$dir" --no-audit --no-fund --silent >"$tools/azurite-install.log" 2>&1; then
        cat "$tools/azurite-install.log" >&2
        echo "azurite.sh: could not install Azurite with npm ci (needs npm and the npm registry)" >&2
        exit 1
      fi
      touch "$dir/.complete"
    fi
  ) 9>"$tools/.azurite-install.lock" || exit 1
  echo "$dir"
}

serve() {
  local port="$1"
  exec node "$dir/node_modules/azurite/dist/src/blob/main.js" --blobHost 127.0.0.1 --blobPort "$port" \
    --inMemoryPersistence --skipApiVersionCheck --disableProductStyleUrl --silent
}

container() {
  local port="$1" name="$2"
  # The emulator's published development account (not a secret).
  NODE_PATH="$dir/node_modules" node -e '
    const { BlobServiceClient, StorageSharedKeyCredential } = require("@azure/storage-blob");
    const [port, name] = process.argv.slice(1);
    const account = "devstoreaccount1";
    const key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    const service = new BlobServiceClient(`http://127.0.0.1:${port}/${account}`, new StorageSharedKeyCredential(account, key));
    service.getContainerClient(name).createIfNotExists()
      .then(() => console.log(`container ${name} ready`))
      .catch((e) => { console.error(`cannot create container ${name}: ${e.message}`); process.exit(1); });
  ' "$port" "$name"
}

case "${1:-}" in
  install) install ;;
  run)
    port="${2:?usage: azurite.sh run PORT}"
    install >/dev/null
    serve "$port"
    ;;
  container)
    install >/dev/null
    container "${2:?usage: azurite.sh container PORT NAME}" "${3:?usage: azurite.sh container PORT NAME}"
    ;;
  start)
    port="${2:-10000}"
    install >/dev/null
    (serve "$port") >"$tools/azurite-$port.log" 2>&1 &
    pid=$!
    trap 'kill "$pid" 2>/dev/null' ERR
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
      sleep 0.1
    done
    container "$port" weir >&2
    trap - ERR
    echo "export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$port"
    echo "(checkpoints: --checkpoint-dir az://weir/PREFIX)"
    echo "pid=$pid"
    ;;
  *)
    echo "usage: scripts/azurite.sh install | run PORT | container PORT NAME | start [PORT]" >&2
    exit 2
    ;;
esac
