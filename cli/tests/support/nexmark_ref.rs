//! Test data and an independent brute-force implementation of the Nexmark
//! queries, to compare weir's rows with. The reference looks at the whole
//! event list at once (no windows state, no watermarks, no arrival order),
//! so it shares nothing with the streaming implementation but the row types.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use weir_workloads::nexmark::generator::{nexmark_event, GeneratorConfig};
use weir_workloads::nexmark::model::Event;
use weir_workloads::nexmark::queries::{BidRow, Q11Row, Q2Row, Q3Row, Q5Row, Q7Row, Q8Row, Query, Row};

/// The generator settings of the tests: 1 000 events per second of event time,
/// so a few tens of thousands of events span many 10 s windows.
pub fn test_config(events: u64) -> GeneratorConfig {
    GeneratorConfig {
        events: Some(events),
        event_time_rate: 1_000,
        ..GeneratorConfig::default()
    }
}

/// Events `0..n` of the test generator, in order.
pub fn generated(n: u64) -> Vec<Event> {
    let config = test_config(n);
    (0..n).map(|i| nexmark_event(i, &config)).collect()
}

/// A small deterministic PRNG for the perturbations.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The events of `generated(n)`, made harder:
/// - out of order: every event moves by up to 3 s of event time (within the
///   queries' 4 s bound, so none is late);
/// - persons after their auctions: every person with an id divisible by 100
///   (a hot seller) is moved to just after its first auction, with a
///   `dateTime` 1 ms after it;
/// - ties: in every tumbling 10 s window, a second bid with the window's
///   highest price (another bidder), and in q5 terms, ties come naturally.
pub fn perturbed(n: u64) -> Vec<Event> {
    let mut events = generated(n);
    // Ties for q7: per 10 s window, copy the highest bid with bidder + 1.
    let mut best: BTreeMap<i64, usize> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if let Event::Bid(b) = e {
            let w = b.date_time.div_euclid(10_000);
            let better = match best.get(&w) {
                Some(&j) => matches!(&events[j], Event::Bid(o) if b.price > o.price),
                None => true,
            };
            if better {
                best.insert(w, i);
            }
        }
    }
    let mut ties: Vec<(usize, Event)> = best
        .values()
        .map(|&i| {
            let mut tie = events[i].clone();
            if let Event::Bid(b) = &mut tie {
                b.bidder += 1;
            }
            (i + 1, tie)
        })
        .collect();
    ties.sort_by_key(|t| std::cmp::Reverse(t.0));
    for (at, tie) in ties {
        events.insert(at, tie);
    }
    // Bounded disorder: sort by time + jitter in [0, 3000).
    let mut keyed: Vec<(i64, usize, Event)> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| (e.date_time() + (mix(i as u64) % 3_000) as i64, i, e))
        .collect();
    keyed.sort_by_key(|k| (k.0, k.1));
    let mut events: Vec<Event> = keyed.into_iter().map(|k| k.2).collect();
    // Hot sellers after their first auction.
    let mut done = BTreeSet::new();
    let mut i = 0;
    while i < events.len() {
        let moved = match &events[i] {
            Event::Person(p) if p.id % 100 == 0 && done.insert(p.id) => events[i + 1..]
                .iter()
                .position(|e| matches!(e, Event::Auction(a) if a.seller == p.id))
                .map(|k| i + 1 + k),
            _ => None,
        };
        if let Some(auction_at) = moved {
            let Event::Auction(a) = &events[auction_at] else {
                unreachable!()
            };
            let at = a.date_time + 1;
            let mut person = events.remove(i);
            if let Event::Person(p) = &mut person {
                p.date_time = at;
            }
            events.insert(auction_at, person); // after the auction (which moved up by one)
            continue; // re-examine position i
        }
        i += 1;
    }
    events
}

/// The largest amount by which an event is older than one before it.
pub fn disorder_ms(events: &[Event]) -> i64 {
    let mut newest = i64::MIN;
    let mut worst = 0;
    for e in events {
        newest = newest.max(e.date_time());
        worst = worst.max(newest - e.date_time());
    }
    worst
}

/// The rows of `query` over `events`, sorted.
pub fn expected(query: Query, events: &[Event]) -> Vec<Row> {
    let bids = || {
        events.iter().filter_map(|e| match e {
            Event::Bid(b) => Some(b),
            _ => None,
        })
    };
    let mut rows: Vec<Row> = match query {
        Query::Q0 | Query::Q1 => bids()
            .map(|b| {
                Row::Bid(BidRow {
                    auction: b.auction,
                    bidder: b.bidder,
                    price: if query == Query::Q1 {
                        b.price * 908 / 1000
                    } else {
                        b.price
                    },
                    date_time: b.date_time,
                    extra: b.extra.clone(),
                })
            })
            .collect(),
        Query::Q2 => bids()
            .filter(|b| b.auction % 123 == 0)
            .map(|b| {
                Row::Q2(Q2Row {
                    auction: b.auction,
                    price: b.price,
                })
            })
            .collect(),
        Query::Q3 => {
            let mut out = Vec::new();
            for e in events {
                let Event::Auction(a) = e else { continue };
                if a.category != 10 {
                    continue;
                }
                for p in events {
                    if let Event::Person(p) = p {
                        if p.id == a.seller && ["OR", "ID", "CA"].contains(&&*p.state) {
                            out.push(Row::Q3(Q3Row {
                                name: p.name.clone(),
                                city: p.city.clone(),
                                state: p.state.clone(),
                                id: a.id,
                            }));
                        }
                    }
                }
            }
            out
        }
        Query::Q5 => {
            // (window start) -> auction -> count, over every sliding window containing the bid.
            let mut counts: BTreeMap<i64, BTreeMap<i64, i64>> = BTreeMap::new();
            for b in bids() {
                let last_start = b.date_time.div_euclid(2_000) * 2_000;
                let mut start = last_start;
                while start > b.date_time - 10_000 {
                    *counts.entry(start).or_default().entry(b.auction).or_default() += 1;
                    start -= 2_000;
                }
            }
            let mut out = Vec::new();
            for (start, per_auction) in counts {
                let max = per_auction.values().copied().max().unwrap_or(0);
                for (auction, n) in per_auction {
                    if n == max {
                        out.push(Row::Q5(Q5Row {
                            auction,
                            num: n,
                            window_start: start,
                            window_end: start + 10_000,
                        }));
                    }
                }
            }
            out
        }
        Query::Q7 => {
            let mut max: BTreeMap<i64, i64> = BTreeMap::new();
            for b in bids() {
                let w = b.date_time.div_euclid(10_000) * 10_000;
                let m = max.entry(w).or_insert(i64::MIN);
                *m = (*m).max(b.price);
            }
            bids()
                .filter(|b| max[&(b.date_time.div_euclid(10_000) * 10_000)] == b.price)
                .map(|b| {
                    let w = b.date_time.div_euclid(10_000) * 10_000;
                    Row::Q7(Q7Row {
                        auction: b.auction,
                        bidder: b.bidder,
                        price: b.price,
                        date_time: b.date_time,
                        window_start: w,
                        window_end: w + 10_000,
                    })
                })
                .collect()
        }
        Query::Q8 => {
            let window = |t: i64| t.div_euclid(10_000) * 10_000;
            let sellers: BTreeSet<(i64, i64)> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Auction(a) => Some((a.seller, window(a.date_time))),
                    _ => None,
                })
                .collect();
            let rows: BTreeSet<Row> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Person(p) if sellers.contains(&(p.id, window(p.date_time))) => Some(Row::Q8(Q8Row {
                        id: p.id,
                        name: p.name.clone(),
                        window_start: window(p.date_time),
                    })),
                    _ => None,
                })
                .collect();
            rows.into_iter().collect()
        }
        Query::Q11 => {
            let mut times: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            for b in bids() {
                times.entry(b.bidder).or_default().push(b.date_time);
            }
            let mut out = Vec::new();
            for (bidder, mut ts) in times {
                ts.sort_unstable();
                let mut first = 0;
                for i in 1..=ts.len() {
                    if i == ts.len() || ts[i] - ts[i - 1] >= 10_000 {
                        out.push(Row::Q11(Q11Row {
                            bidder,
                            bid_count: (i - first) as i64,
                            window_start: ts[first],
                            window_end: ts[i - 1] + 10_000,
                        }));
                        first = i;
                    }
                }
            }
            out
        }
    };
    rows.sort();
    rows
}

/// Parses result rows written as JSON lines (files or Kafka values), sorted.
pub fn parse_rows(query: Query, lines: impl IntoIterator<Item = Vec<u8>>) -> Vec<Row> {
    let mut rows: Vec<Row> = lines
        .into_iter()
        .map(|l| {
            let text = String::from_utf8(l).expect("rows are UTF-8");
            let row = match query {
                Query::Q0 | Query::Q1 => Row::Bid(serde_json::from_str(&text).expect("a bid row")),
                Query::Q2 => Row::Q2(serde_json::from_str(&text).expect("a q2 row")),
                Query::Q3 => Row::Q3(serde_json::from_str(&text).expect("a q3 row")),
                Query::Q5 => Row::Q5(serde_json::from_str(&text).expect("a q5 row")),
                Query::Q7 => Row::Q7(serde_json::from_str(&text).expect("a q7 row")),
                Query::Q8 => Row::Q8(serde_json::from_str(&text).expect("a q8 row")),
                Query::Q11 => Row::Q11(serde_json::from_str(&text).expect("a q11 row")),
            };
            // Exactly the query's fields: the row serializes back to the same object.
            let back: serde_json::Value = serde_json::from_str(&row.to_json()).unwrap();
            let read: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, read, "row has other fields than the query's: {text}");
            row
        })
        .collect();
    rows.sort();
    rows
}

/// Lost and duplicated rows of `actual` against `reference` (multisets).
pub fn diff(reference: &[Row], actual: &[Row]) -> (usize, usize) {
    let mut want: BTreeMap<&Row, i64> = BTreeMap::new();
    for r in reference {
        *want.entry(r).or_default() += 1;
    }
    for r in actual {
        *want.entry(r).or_default() -= 1;
    }
    let lost = want.values().filter(|v| **v > 0).map(|v| *v as usize).sum();
    let extra = want.values().filter(|v| **v < 0).map(|v| (-*v) as usize).sum();
    (lost, extra)
}
