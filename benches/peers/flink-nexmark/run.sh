#!/usr/bin/env bash
# Nexmark on Apache Flink 2.3.0 (local MiniCluster in one JVM) over a JSON-lines file of events,
# the peer of weir's Nexmark queries on the same file. Job: src/NexmarkFlink.java.
#
# Usage: bash run.sh EVENTS.jsonl [q0 q1 q2 q3 q5 q7 q8 q11]      (default: all eight)
# Prints one JSON line per run on stdout (the job's RESULT line plus checkpoint stats from the log).
# Env:
#   BACKEND=rocksdb|hashmap (rocksdb)   CKPT_MS (1000; 0 = off)   REPS (1)   PARALLELISM (1)
#   OUT_DIR   unset: rows are only counted; set: rows of query q written to $OUT_DIR/flink-q.jsonl
#   JVM_OPTS (-Xms4g -Xmx4g)   OBJECT_REUSE (true)   RESULTS (file to append the JSON lines to)
#   Q11_SPLIT_AT_GAP (false; true: a bid exactly 10 s after the previous one starts a new session, as in weir)
#   FLINK_VENV (/tmp/peers-flink-venv, shared with /work/shared/bench/peers/setup-flink.sh)
#   CLASSES (/tmp/flink-nexmark-classes)   LOG_DIR (/tmp/flink-nexmark-logs)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 1 ]; then sed -n '2,15p' "$0" >&2; exit 2; fi
INPUT="$(realpath "$1")"; shift
QUERIES="${*:-q0 q1 q2 q3 q5 q7 q8 q11}"
BACKEND="${BACKEND:-rocksdb}"
CKPT_MS="${CKPT_MS:-1000}"
REPS="${REPS:-1}"
PARALLELISM="${PARALLELISM:-1}"
OBJECT_REUSE="${OBJECT_REUSE:-true}"
Q11_SPLIT_AT_GAP="${Q11_SPLIT_AT_GAP:-false}"
JVM_OPTS="${JVM_OPTS:--Xms4g -Xmx4g}"
FLINK_VENV="${FLINK_VENV:-/tmp/peers-flink-venv}"
FLINK_LIB="$FLINK_VENV/lib/python3.11/site-packages/pyflink/lib"
CLASSES="${CLASSES:-/tmp/flink-nexmark-classes}"
LOG_DIR="${LOG_DIR:-/tmp/flink-nexmark-logs}"
CKPT_DIR=/tmp/flink-nexmark-ckpt
[ -f "$INPUT" ] || { echo "no such input file: $INPUT" >&2; exit 2; }

# 1. Flink jars from PyPI (same venv and pip step as /work/shared/bench/peers/setup-flink.sh).
if [ ! -f "$FLINK_LIB/flink-dist-2.3.0.jar" ]; then
  python3 -m venv "$FLINK_VENV"
  "$FLINK_VENV/bin/pip" install -q apache-flink==2.3.0 apache-flink-libraries==2.3.0
fi
# flink-dist has the DataStream API, RocksDB state backend (and rocksdbjni) and shaded Jackson;
# FileSource/TextLineInputFormat are in flink-connector-files.
CP_LIBS="$FLINK_LIB/flink-dist-2.3.0.jar:$FLINK_LIB/flink-connector-files-2.3.0.jar"
CP="$CLASSES:$CP_LIBS:$FLINK_LIB/log4j-api-2.25.3.jar:$FLINK_LIB/log4j-core-2.25.3.jar:$FLINK_LIB/log4j-slf4j-impl-2.25.3.jar:$FLINK_LIB/log4j-1.2-api-2.25.3.jar"

# 2. Compile when the class is missing or older than the source.
SRC="$HERE/src/NexmarkFlink.java"
if [ ! -f "$CLASSES/NexmarkFlink.class" ] || [ "$SRC" -nt "$CLASSES/NexmarkFlink.class" ]; then
  mkdir -p "$CLASSES"
  javac -d "$CLASSES" -cp "$CP_LIBS" "$SRC"
fi

# 3. Run.
mkdir -p "$LOG_DIR"
[ -n "${OUT_DIR:-}" ] && mkdir -p "$OUT_DIR"
for REP in $(seq 1 "$REPS"); do
  for Q in $QUERIES; do
    tag="$Q-$BACKEND-p$PARALLELISM-ck$CKPT_MS-r$REP"
    log="$LOG_DIR/$tag.log"; rm -rf "$CKPT_DIR" "$log"
    out_arg=(); [ -n "${OUT_DIR:-}" ] && out_arg=("$OUT_DIR/flink-$Q.jsonl")
    res=$(java $JVM_OPTS -Dpeers.log.file="$log" -Dlog4j.configurationFile="$HERE/log4j2.properties" \
          -Dnexmark.parallelism="$PARALLELISM" -Dnexmark.objectReuse="$OBJECT_REUSE" -Dnexmark.q11SplitAtGap="$Q11_SPLIT_AT_GAP" \
          -Dnexmark.ckptDir="$CKPT_DIR" \
          -cp "$CP" NexmarkFlink "$Q" "$INPUT" "$BACKEND" "$CKPT_MS" "${out_arg[@]}" | grep '^RESULT ' | cut -c8-) || true
    if [ -z "$res" ]; then echo "FAILED $tag (see $log)" >&2; continue; fi
    # checkpoint stats from the CheckpointCoordinator INFO lines (as run-flink.sh does)
    line=$( { grep -o 'Completed checkpoint [0-9]* for job [0-9a-f]* ([0-9]* bytes, checkpointDuration=[0-9]* ms' "$log" || true; } \
      | sed -E 's/.*\(([0-9]+) bytes, checkpointDuration=([0-9]+) ms/\1 \2/' \
      | RES="$res" FAILED="$(grep -c 'Failed to trigger or complete checkpoint' "$log" || true)" REP="$REP" python3 -c '
import json, os, statistics as s, sys
rows = [tuple(map(int, l.split())) for l in sys.stdin if l.strip()]
d = [r[1] for r in rows]
r = json.loads(os.environ["RES"])
r.update({"ckpt_completed": len(rows), "ckpt_dur_ms_median": (s.median(d) if d else None),
          "ckpt_dur_ms_max": (max(d) if d else None), "ckpt_bytes_max": (max(x[0] for x in rows) if rows else None),
          "ckpt_failed_or_aborted": int(os.environ["FAILED"] or 0), "rep": int(os.environ["REP"])})
print(json.dumps(r, separators=(",", ":")))')
    echo "$line"
    if [ -n "${RESULTS:-}" ]; then echo "$line" >> "$RESULTS"; fi
  done
done
