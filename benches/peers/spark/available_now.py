"""Spark Structured Streaming peer of `weir run kafka-count --bounded` (see README.md).

Kafka topic --input, values `id,key,value` -> groupBy(key).applyInPandasWithState (running
count and sum per key, RocksDB state store) -> Kafka topic --output, one record per input
record, value `id,key,count,sum`, no key. One Trigger.AvailableNow run: reads every offset
after the checkpoint's (from the earliest on a new checkpoint), then exits. Run by run.sh
through spark-submit; prints one line `RESULT {json}` on stdout.
"""

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.state import GroupStateTimeout

ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
# weir's parse_input: exactly three unsigned integers, each trimmed.
INPUT_RE = r"^\s*[0-9]+\s*,\s*[0-9]+\s*,\s*[0-9]+\s*$"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--checkpoint", required=True, help="checkpointLocation (kept between runs)")
    p.add_argument(
        "--shuffle-partitions",
        type=int,
        default=4,
        help="spark.sql.shuffle.partitions = state store partitions; fixed by the checkpoint's first run",
    )
    p.add_argument("--max-offsets-per-trigger", type=int, help="split the run into batches of at most N records")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="any Spark SQL setting")
    return p.parse_args()


def count_sum(key, batches, state):
    """One key's records of one micro-batch, in id order: count and sum after each record."""
    pdf = pd.concat(list(batches), ignore_index=True)
    order = np.argsort(pdf["id"].to_numpy(), kind="stable")
    ids = pdf["id"].to_numpy()[order]
    values = pdf["value"].to_numpy()[order]
    count, total = state.get if state.exists else (0, 0)
    counts = count + np.arange(1, len(ids) + 1, dtype=np.int64)
    sums = total + np.cumsum(values, dtype=np.int64)
    state.update((int(counts[-1]), int(sums[-1])))
    k = int(key[0])
    yield pd.DataFrame({"value": [f"{i},{k},{c},{s}" for i, c, s in zip(ids, counts, sums)]})


def main():
    args = parse_args()
    builder = (
        SparkSession.builder.appName("weir-peer-spark-available-now")
        .config("spark.sql.streaming.stateStore.providerClass", ROCKSDB)
        .config("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
        # every batch's progress stays in recentProgress (the records count is summed from it)
        .config("spark.sql.streaming.numRecentProgressUpdates", "100000")
    )
    for kv in args.conf:
        k, _, v = kv.partition("=")
        builder = builder.config(k, v)
    spark = builder.getOrCreate()

    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap)
        .option("subscribe", args.input)
        .option("startingOffsets", "earliest")
    )
    if args.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(args.max_offsets_per_trigger))
    raw = reader.load()

    line = F.col("value").cast("string")
    # A bad value fails the query (as weir's default --bad-records fail); casts are ANSI (Spark 4).
    fields = F.when(line.rlike(INPUT_RE), F.split(line, ",")).otherwise(
        F.raise_error(F.concat(F.lit("not id,key,value: "), F.coalesce(line, F.lit("null"))))
    )
    parsed = raw.select(fields.alias("f")).select(
        F.trim(F.col("f")[0]).cast("long").alias("id"),
        F.trim(F.col("f")[1]).cast("long").alias("key"),
        F.trim(F.col("f")[2]).cast("long").alias("value"),
    )
    out = parsed.groupBy("key").applyInPandasWithState(
        count_sum,
        outputStructType="value string",
        stateStructType="count long, sum long",
        outputMode="append",
        timeoutConf=GroupStateTimeout.NoTimeout,
    )
    query = (
        out.writeStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap)
        .option("topic", args.output)
        .option("checkpointLocation", args.checkpoint)
        .outputMode("append")
        .queryName("weir-peer-spark")
        .trigger(availableNow=True)
    )
    t0 = time.monotonic()
    q = query.start()
    q.awaitTermination()
    query_s = time.monotonic() - t0

    batches = {}
    for p in q.recentProgress:
        batches[p.batchId] = p
    records = sum(p.numInputRows for p in batches.values())
    with_data = [p for p in batches.values() if p.numInputRows > 0]
    result = {
        "records": records,
        "query_s": round(query_s, 3),
        "batches": len(with_data),
        "batch_ids": [min(batches), max(batches)] if batches else [],
        "batch_ms": [p.batchDuration for p in sorted(with_data, key=lambda p: p.batchId)],
        "spark": spark.version,
    }
    spark.stop()
    print("RESULT " + json.dumps(result, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    sys.exit(main())
