#!/usr/bin/env python3
"""Plain-Python reference of the eight queries' rows for a Nexmark JSON-lines
file, and a checker for a rows file (Flink's or weir's): compares the rows as
multisets (order ignored).

    python3 reference.py EVENTS.jsonl QUERY ROWS.jsonl    # exit 1 on a difference
    python3 reference.py EVENTS.jsonl QUERY               # print the expected rows
    add --flink-sessions for Flink's q11 semantics (see below)

q11 sessions: by default (weir's rule) a bid exactly 10 000 ms after the
previous one starts a new session; Flink's EventTimeSessionWindows merge
windows that merely touch ([t, t+gap) and [t+gap, ...): TimeWindow.intersects
uses <=), so there such a bid extends the session. --flink-sessions models
Flink. The two differ only when two bids of a bidder are exactly 10 s apart.

Assumes no event is later than the 4 s watermark bound (true for
make-smoke-input.py's files and the Nexmark generator); late records, which
the engines drop, are not modelled.
"""
import json
import sys
from collections import Counter, defaultdict

W = 10_000


def rows(events, q, flink_sessions=False):
    bids = [e for e in events if e["type"] == "bid"]
    out = []
    if q in ("q0", "q1"):
        for b in bids:
            price = b["price"] * 908 // 1000 if q == "q1" else b["price"]  # prices >= 0
            out.append({"auction": b["auction"], "bidder": b["bidder"], "price": price,
                        "dateTime": b["dateTime"], "extra": b["extra"]})
    elif q == "q2":
        out = [{"auction": b["auction"], "price": b["price"]} for b in bids if b["auction"] % 123 == 0]
    elif q == "q3":
        ps = [e for e in events if e["type"] == "person" and e["state"] in ("OR", "ID", "CA")]
        au = [e for e in events if e["type"] == "auction" and e["category"] == 10]
        for p in ps:
            for a in au:
                if a["seller"] == p["id"]:
                    out.append({"name": p["name"], "city": p["city"], "state": p["state"], "id": a["id"]})
    elif q == "q5":
        counts = defaultdict(Counter)  # window start -> auction -> count
        for b in bids:
            t = b["dateTime"]
            last = t - t % 2000
            for s in range(last, t - W, -2000):
                counts[s][b["auction"]] += 1
        for s, c in counts.items():
            m = max(c.values())
            out += [{"auction": a, "num": n, "window_start": s, "window_end": s + W} for a, n in c.items() if n == m]
    elif q == "q7":
        win = defaultdict(list)
        for b in bids:
            win[b["dateTime"] // W * W].append(b)
        for s, bs in win.items():
            m = max(b["price"] for b in bs)
            out += [{"auction": b["auction"], "bidder": b["bidder"], "price": b["price"], "dateTime": b["dateTime"],
                     "window_start": s, "window_end": s + W} for b in bs if b["price"] == m]
    elif q == "q8":
        sellers = {(a["seller"], a["dateTime"] // W * W) for a in events if a["type"] == "auction"}
        seen = {(p["id"], p["name"], p["dateTime"] // W * W) for p in events if p["type"] == "person"}
        out = [{"id": i, "name": n, "window_start": s} for (i, n, s) in seen if (i, s) in sellers]
    elif q == "q11":
        per = defaultdict(list)
        for b in bids:
            per[b["bidder"]].append(b["dateTime"])
        for bidder, ts in per.items():
            ts.sort()
            start = prev = ts[0]
            n = 0
            for t in ts:
                if t - prev > W or (t - prev == W and not flink_sessions):
                    out.append({"bidder": bidder, "bid_count": n, "window_start": start, "window_end": prev + W})
                    start, n = t, 0
                n += 1
                prev = t
            out.append({"bidder": bidder, "bid_count": n, "window_start": start, "window_end": prev + W})
    else:
        raise SystemExit(f"unknown query {q}")
    return out


def key(r):
    return json.dumps(r, sort_keys=False, ensure_ascii=False, separators=(",", ":"))


def main():
    flink_sessions = "--flink-sessions" in sys.argv
    argv = [a for a in sys.argv if a != "--flink-sessions"]
    events = [json.loads(l) for l in open(argv[1], encoding="utf-8") if l.strip()]
    q = argv[2]
    expected = rows(events, q, flink_sessions)
    if len(argv) < 4:
        for r in expected:
            print(key(r))
        return
    got = [json.loads(l) for l in open(argv[3], encoding="utf-8") if l.strip()]
    bad_fields = {tuple(r.keys()) for r in got} - {tuple(r.keys()) for r in expected}
    e, g = Counter(map(key, expected)), Counter(map(key, got))
    missing, extra = e - g, g - e
    ok = not missing and not extra and not bad_fields
    print(json.dumps({"query": q, "expected": len(expected), "got": len(got), "ok": ok,
                      "missing": sum(missing.values()), "extra": sum(extra.values()),
                      "field_orders_not_expected": [list(k) for k in bad_fields]}))
    for r in list(missing)[:5]:
        print("  missing", r)
    for r in list(extra)[:5]:
        print("  extra  ", r)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
