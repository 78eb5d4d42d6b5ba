#!/usr/bin/env bash
# Rescale of keyed RocksDB state on Apache Flink 2.3.0 (local MiniCluster in one JVM): KEYS keys with a
# ValueState<Long> each, loaded at p=FROM_P, retained incremental checkpoint, restored at p=TO_P.
# Job: src/FlinkRescale.java. The peer of weir's rescale-from-checkpoint figure.
#
# Usage: bash run.sh [KEYS]      (default 10000000)
# Prints one JSON line per run on stdout (the job's RESULT line plus restore timings from the log).
# Env:
#   FROM_P (2)   TO_P (3)   CKPT_MS (1000)   REPS (1)   INGEST_DB (false: Flink's default restore path;
#   true: state.backend.rocksdb.use-ingest-db-restore-mode)   MANAGED_MEM (1g, TaskManager managed memory
#   = RocksDB block cache + write buffers, shared by the slots)   VERIFY_DELAY_MS (1000)
#   JVM_OPTS (-Xms4g -Xmx4g)   RESULTS (file to append the JSON lines to)
#   FLINK_VENV (/tmp/peers-flink-venv, shared with ../flink-nexmark)   CLASSES (/tmp/flink-rescale-classes)
#   LOG_DIR (/tmp/flink-rescale-logs)   CKPT_DIR (/tmp/flink-rescale-ckpt; wiped before each run)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KEYS="${1:-10000000}"
FROM_P="${FROM_P:-2}"
TO_P="${TO_P:-3}"
CKPT_MS="${CKPT_MS:-1000}"
REPS="${REPS:-1}"
INGEST_DB="${INGEST_DB:-false}"
MANAGED_MEM="${MANAGED_MEM:-1g}"
VERIFY_DELAY_MS="${VERIFY_DELAY_MS:-1000}"
JVM_OPTS="${JVM_OPTS:--Xms4g -Xmx4g}"
FLINK_VENV="${FLINK_VENV:-/tmp/peers-flink-venv}"
FLINK_LIB="$FLINK_VENV/lib/python3.11/site-packages/pyflink/lib"
CLASSES="${CLASSES:-/tmp/flink-rescale-classes}"
LOG_DIR="${LOG_DIR:-/tmp/flink-rescale-logs}"
CKPT_DIR="${CKPT_DIR:-/tmp/flink-rescale-ckpt}"

# 1. Flink jars from PyPI (same venv and pip step as ../flink-nexmark/run.sh).
if [ ! -f "$FLINK_LIB/flink-dist-2.3.0.jar" ]; then
  python3 -m venv "$FLINK_VENV"
  "$FLINK_VENV/bin/pip" install -q apache-flink==2.3.0 apache-flink-libraries==2.3.0
fi
# flink-dist has the DataStream API, the MiniCluster, the RocksDB state backend and rocksdbjni.
CP_LIBS="$FLINK_LIB/flink-dist-2.3.0.jar"
CP="$CLASSES:$CP_LIBS:$FLINK_LIB/log4j-api-2.25.3.jar:$FLINK_LIB/log4j-core-2.25.3.jar:$FLINK_LIB/log4j-slf4j-impl-2.25.3.jar:$FLINK_LIB/log4j-1.2-api-2.25.3.jar"

# 2. Compile when the class is missing or older than the source.
SRC="$HERE/src/FlinkRescale.java"
if [ ! -f "$CLASSES/FlinkRescale.class" ] || [ "$SRC" -nt "$CLASSES/FlinkRescale.class" ]; then
  mkdir -p "$CLASSES"
  javac -d "$CLASSES" -cp "$CP_LIBS" "$SRC"
fi

# 3. Run.
mkdir -p "$LOG_DIR"
for REP in $(seq 1 "$REPS"); do
  tag="k$KEYS-p$FROM_P-p$TO_P-ingest$INGEST_DB-r$REP-$(date +%H%M%S)"
  log="$LOG_DIR/$tag.log"; err="$LOG_DIR/$tag.stderr"
  rm -rf "$CKPT_DIR"
  load_before=$(cut -d' ' -f1 /proc/loadavg)
  sync; # checkpoint files of the previous run are gone; the new ones stay in the page cache (as weir's local dir)
  res=$(java $JVM_OPTS -Dpeers.log.file="$log" -Dlog4j.configurationFile="$HERE/log4j2.properties" \
        -cp "$CP" FlinkRescale "$KEYS" "$FROM_P" "$TO_P" "$CKPT_MS" "$CKPT_DIR" "$INGEST_DB" "$MANAGED_MEM" "$VERIFY_DELAY_MS" \
        2> "$err" | grep '^RESULT ' | cut -c8-) || true
  if [ -z "$res" ]; then echo "FAILED $tag (see $err and $log)" >&2; tail -5 "$err" >&2; continue; fi
  # Restore steps from the RocksDB backend's INFO log lines and the JobMaster's per-subtask
  # initialization metrics (DEBUG line of JobInitializationMetricsBuilder).
  line=$(RES="$res" LOG="$log" REP="$REP" LOAD_BEFORE="$load_before" python3 - <<'EOF'
import json, os, re
r = json.loads(os.environ["RES"])
log = open(os.environ["LOG"], errors="replace").read().splitlines()
def ms(l):
    h, m, s = l[:12].split(":"); s, f = s.split(",")
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(f)
# per-subtask RocksDB incremental recovery, by target key-group range: whole recovery ("Starting RocksDB
# incremental recovery ... target key-group range [a, b]" .. "Finished RocksDB incremental recovery ...
# range range [a, b]."), opening (and clipping) the base instance, copying the other handles' key groups
# through temporary instances (or export/ingest with INGEST_DB=true).
steps = [("rocksdb_restore_s", r"Starting RocksDB incremental recovery in operator \S+ target key-group range (\[[0-9, ]+\])",
                               r"Finished RocksDB incremental recovery in operator \S+ with target key-group range range (\[[0-9, ]+\])"),
         ("open_base_s", r"Starting opening base RocksDB instance in operator \S+ with target key-group range (\[[0-9, ]+\])",
                         r"Finished opening base RocksDB instance in operator \S+ with target key-group range (\[[0-9, ]+\])"),
         ("copy_temp_s", r"Starting to copy state handles for backend with range (\[[0-9, ]+\])",
                         r"Completed copying state handles for backend with range (\[[0-9, ]+\])"),
         ("export_s", r"Starting restore export for backend with range (\[[0-9, ]+\])",
                      r"Completed restore export for backend with range (\[[0-9, ]+\])"),
         ("import_s", r"Starting to import exported state handles for backend with range (\[[0-9, ]+\])",
                      r"Completed importing exported state handles for backend with range (\[[0-9, ]+\])")]
spans, started = {}, {}
for l in log:
    for name, a, b in steps:
        m = re.search(a, l)
        if m: started[(name, m.group(1))] = ms(l)
        m = re.search(b, l)
        if m and (name, m.group(1)) in started:
            spans.setdefault(m.group(1), {"range": m.group(1)})[name] = (ms(l) - started[(name, m.group(1))]) / 1e3
r["rocksdb_restore_spans"] = sorted(spans.values(), key=lambda s: int(s["range"][1:].split(",")[0]))
r["rocksdb_restore_max_s"] = max((s.get("rocksdb_restore_s", 0) for s in spans.values()), default=None)
r["restore_used_temp_instance_copy"] = any("using temporary instance" in l for l in log)
r["restore_used_ingest_db"] = any("using Clip/Ingest DB" in l for l in log)
# JobInitializationMetricsBuilder: "Reported SubTaskInitializationMetrics=SubTaskInitializationMetrics{..., durationMetrics={...}, ...}"
mets = []
for l in log:
    if "Reported SubTaskInitializationMetrics=" in l:
        d = re.search(r"durationMetrics=\{([^}]*)\}", l)
        if d:
            mets.append({k.strip(): int(v) for k, v in (kv.split("=") for kv in d.group(1).split(",") if "=" in kv)})
for key in ("RestoreStateDurationMs", "DownloadStateDurationMs", "InitializeStateDurationMs", "MailboxStartDurationMs"):
    vals = [m[key] for m in mets if key in m]
    if vals: r["flink_" + key + "_max"] = max(vals)
r["loadavg_1m_before"] = float(os.environ["LOAD_BEFORE"])  # other processes on the 2-core machine
r["rep"] = int(os.environ["REP"])
r["log"] = os.environ["LOG"]
print(json.dumps(r, separators=(",", ":")))
EOF
)
  echo "$line"
  if [ -n "${RESULTS:-}" ]; then echo "$line" >> "$RESULTS"; fi
done
