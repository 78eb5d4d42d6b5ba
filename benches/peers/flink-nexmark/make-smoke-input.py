#!/usr/bin/env python3
"""Writes a small, deterministic Nexmark JSON-lines file for smoke tests of the
Flink peer (and of weir on the same file).

    python3 make-smoke-input.py [OUT=/tmp/nexmark-smoke.jsonl] [EVENTS=2000]

Per 20 events: 1 person, 3 auctions, 16 bids; events every 30 ms of event
time (2000 events = 60 s) with +-1.5 s of jitter, so the file is out of order
by at most 3 s (< the 4 s watermark bound: no record is late). Edge cases on
purpose: auctions whose seller appears later (q3 join from either side),
auction ids that are multiples of 123 (q2), category 10 and states OR/ID/CA
(q3), repeated prices (q7 ties), low per-auction counts (q5 ties), a person
id repeated with another name (q8 distinct), strings with quotes, backslashes
and non-ASCII characters (JSON escaping).
"""
import json
import random
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/nexmark-smoke.jsonl"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
rng = random.Random(42)
BASE = 1_700_000_000_000  # ms; multiple of 10 s, so windows align with the file start
STATES = ["OR", "ID", "CA", "WA", "NY", "AZ"]
CITIES = ["Portland", "Boise", "San Francisco", "Seattle", "New York", "Phoenix"]
FIRST = ["Ann", "Bob", "Zoë", "Li", "O'Neil", "Kai"]
LAST = ["Lee", "Smith", "Müller", "\"Q\" Jones", "Back\\slash", "Ng"]

persons = []  # ids emitted so far
next_person = 1000
next_auction = 1000
auctions = []
lines = []
for i in range(n):
    t = BASE + i * 30 + rng.randint(-1500, 1500)
    slot = i % 20
    if slot == 0:
        pid = next_person
        next_person += 1
        if i % 400 == 200 and persons:  # same id again, another name, same window (q8 distinct)
            pid = persons[-1]
            next_person -= 1
        else:
            persons.append(pid)
        ev = {"type": "person", "id": pid, "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
              "emailAddress": f"p{pid}@example.com", "creditCard": f"{rng.randint(1000, 9999)} 0000",
              "city": rng.choice(CITIES), "state": rng.choice(STATES), "dateTime": t, "extra": ""}
    elif slot in (1, 7, 13):
        aid = next_auction
        next_auction += 1
        auctions.append(aid)
        r = rng.random()
        if r < 0.1 or not persons:
            seller = next_person + rng.randint(0, 1)  # a person that arrives later
        elif r < 0.8:
            seller = rng.choice(persons[-10:])
        else:
            seller = rng.choice(persons)
        ev = {"type": "auction", "id": aid, "itemName": f"item {aid}", "description": "a \"nice\" thing",
              "initialBid": rng.randint(1, 100) * 100, "reserve": rng.randint(100, 200) * 100, "dateTime": t,
              "expires": t + rng.randint(10, 60) * 1000, "seller": seller, "category": rng.randint(10, 14),
              "extra": "ø" * rng.randint(0, 3)}
    else:
        if not auctions or not persons:
            continue
        recent = auctions[-20:]
        auction = recent[min(int(rng.expovariate(0.4)), len(recent) - 1)]
        ev = {"type": "bid", "auction": auction, "bidder": rng.choice(persons),
              "price": rng.randrange(100, 5000, 50), "channel": rng.choice(["Google", "Apple", "Baidu"]),
              "url": f"https://example.com/a/{auction}?x=1", "dateTime": t, "extra": "x" * rng.randint(0, 5)}
    lines.append(json.dumps(ev, ensure_ascii=False, separators=(",", ":")))

with open(out, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
print(f"{len(lines)} events -> {out}", file=sys.stderr)
