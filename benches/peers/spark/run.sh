#!/usr/bin/env bash
# Spark Structured Streaming 4.2.0 peer of `weir run kafka-count --bounded` (available_now.py):
# one Trigger.AvailableNow run over the offsets stored in the checkpoint, then exit.
#
# Usage: bash run.sh --bootstrap HOST:PORT --input TOPIC --output TOPIC --checkpoint DIR
#                    [--shuffle-partitions 4] [--max-offsets-per-trigger N] [--conf KEY=VALUE]...
#        bash run.sh install      (venv + connector jars only, then exit)
# Installs once into ${WEIR_TOOLS_DIR:-/var/tmp/weir-tools}: a venv `spark-venv` with pyspark,
# pandas, pyarrow from PyPI, and the Kafka connector's jars (pom.xml) from Maven Central.
# stdout: one JSON line {"peer":"spark-available-now","records":R,"seconds":S,...}; all else on stderr.
# Env: SPARK_MASTER (local[*])   DRIVER_MEMORY (2g)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -lt 1 ]; then sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; fi

# pyspark and the connector must be the same version (<spark.version> in pom.xml).
SPARK_VERSION=4.2.0
PIP_PINS=("pyspark==$SPARK_VERSION" "pandas==2.3.3" "pyarrow==22.0.0" "numpy==2.3.5")
TOOLS="${WEIR_TOOLS_DIR:-/var/tmp/weir-tools}"
VENV="$TOOLS/spark-venv"
JARS="$TOOLS/spark-kafka-$SPARK_VERSION"
venv_stamp="$VENV/.complete-$SPARK_VERSION"

installed() { [ -f "$venv_stamp" ] && [ -f "$JARS/.complete" ]; }

install() {
  if installed; then return; fi
  mkdir -p "$TOOLS"
  exec 9>"$TOOLS/.spark-install.lock"
  flock 9   # two runs at once install once
  if [ ! -f "$venv_stamp" ]; then
    command -v java >/dev/null || { echo "run.sh: java is not installed (Spark 4 needs Java 17+)" >&2; exit 1; }
    rm -rf "$VENV"
    echo "run.sh: installing ${PIP_PINS[*]} into $VENV (once)" >&2
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "${PIP_PINS[@]}"; } >"$TOOLS/spark-pip.log" 2>&1; then
      cat "$TOOLS/spark-pip.log" >&2; echo "run.sh: pip could not install ${PIP_PINS[*]}" >&2; exit 1
    fi
    touch "$venv_stamp"
  fi
  if [ ! -f "$JARS/.complete" ]; then
    command -v mvn >/dev/null || { echo "run.sh: mvn is not installed (it fetches the Kafka connector)" >&2; exit 1; }
    rm -rf "$JARS"
    echo "run.sh: fetching spark-sql-kafka-0-10_2.13:$SPARK_VERSION into $JARS (once)" >&2
    if ! mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -Dmdep.stripVersion=true -DoutputDirectory="$JARS/all" >"$TOOLS/spark-mvn.log" 2>&1; then
      cat "$TOOLS/spark-mvn.log" >&2
      echo "run.sh: mvn could not fetch org.apache.spark:spark-sql-kafka-0-10_2.13:$SPARK_VERSION" >&2; exit 1
    fi
    # Keep only what pyspark's own jars/ lacks (the connector, kafka-clients, commons-pool2, the
    # token provider): a second copy of a jar Spark ships, maybe of another version, is a conflict.
    pyjars="$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')"
    [ -f "$pyjars/spark-core_2.13-$SPARK_VERSION.jar" ] || { echo "run.sh: no spark-core_2.13-$SPARK_VERSION.jar in $pyjars" >&2; exit 1; }
    for j in "$JARS/all"/*.jar; do
      a="$(basename "$j" .jar)"   # artifactId (versions stripped)
      if compgen -G "$pyjars/$a-[0-9]*.jar" >/dev/null; then
        echo "run.sh: $a: pyspark's own copy is used" >&2
      else
        mv "$j" "$JARS/"
      fi
    done
    rm -rf "$JARS/all"
    touch "$JARS/.complete"
  fi
  exec 9>&-
}

install
if [ "$1" = install ]; then echo "$VENV $JARS"; exit 0; fi

jars="$(find "$JARS" -maxdepth 1 -name '*.jar' | sort | paste -sd, -)"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
export PYSPARK_PYTHON="$VENV/bin/python" PYSPARK_DRIVER_PYTHON="$VENV/bin/python"
# local mode: the driver and the Python workers talk over loopback only.
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
t0="$(date +%s.%N)"
rc=0
"$VENV/bin/spark-submit" --master "${SPARK_MASTER:-local[*]}" --driver-memory "${DRIVER_MEMORY:-2g}" \
  --jars "$jars" \
  --driver-java-options "-Dlog4j2.configurationFile=file:$HERE/log4j2.properties" \
  --conf spark.ui.enabled=false \
  "$HERE/available_now.py" "$@" >"$out" || rc=$?
t1="$(date +%s.%N)"
# The job's stdout is its one result line; anything else a Python worker printed goes to stderr.
grep -v '^RESULT ' "$out" >&2 || true
if [ "$rc" -ne 0 ]; then echo "run.sh: spark-submit exited with $rc" >&2; exit "$rc"; fi
res="$(grep '^RESULT ' "$out" | tail -n 1 | cut -c8-)"
[ -n "$res" ] || { echo "run.sh: the job printed no RESULT line" >&2; exit 1; }
# seconds: spark-submit start to its exit (JVM and Python start, the query, spark.stop(), JVM exit).
RES="$res" T0="$t0" T1="$t1" python3 -c '
import json, os
r = json.loads(os.environ["RES"])
line = {"peer": "spark-available-now", "records": r.pop("records"),
        "seconds": round(float(os.environ["T1"]) - float(os.environ["T0"]), 3)}
line.update(r)
print(json.dumps(line, separators=(",", ":")))'
