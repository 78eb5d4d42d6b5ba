//! The Nexmark queries as weir dataflows, from a stream of [`Event`]s (with
//! event-time watermarks) to a stream of [`Output`] rows. Every stateful
//! operator has a fixed uid, so a query's state survives restarts.
//!
//! | query | what | how |
//! |---|---|---|
//! | q0 | pass-through of bids | `flat_map` |
//! | q1 | price in euros (`price * 908 / 1000`) | `flat_map` |
//! | q2 | bids on auctions `% 123 == 0` | `flat_map` |
//! | q3 | local item suggestion | [`InnerJoin`] of persons (OR, ID, CA) and auctions (category 10) on seller |
//! | q5 | hot items | per-auction counts in sliding windows (10 s every 2 s), then per window the auctions with the highest count |
//! | q7 | highest bid | per tumbling 10 s window, the bids with the highest price |
//! | q8 | new users | [`WindowJoin`] (tumbling 10 s) of persons and the auctions they sell |
//! | q11 | user sessions | [`SessionAggregate`] per bidder, gap 10 s |
//!
//! q4 and q6 (averages over auctions closed by their winning bid) need
//! retractions (a later, higher bid changes an emitted result); weir emits
//! append-only rows, so they are not offered.

use super::model::{Bid, Event, Text, TextFields};
use serde::{Deserialize, Serialize};
use weir::Stream;
use weir_operators::aggregators::Count;
use weir_operators::{
    Either, InnerJoin, KeyedContext, KeyedProcess, OperatorError, SessionAggregate, Sliding, Timestamp, Tumbling,
    Window, WindowAggregate, WindowJoin, Windowed,
};

/// A Nexmark query weir runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Query {
    /// Pass-through.
    Q0,
    /// Currency conversion.
    Q1,
    /// Selection.
    Q2,
    /// Local item suggestion (join).
    Q3,
    /// Hot items (sliding windows).
    Q5,
    /// Highest bid (tumbling windows).
    Q7,
    /// Monitor new users (window join).
    Q8,
    /// User sessions (session windows).
    Q11,
}

impl Query {
    /// Every query, in order.
    pub const ALL: [Query; 8] = [
        Query::Q0,
        Query::Q1,
        Query::Q2,
        Query::Q3,
        Query::Q5,
        Query::Q7,
        Query::Q8,
        Query::Q11,
    ];

    /// `q0`, `q1`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q3 => "q3",
            Query::Q5 => "q5",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
            Query::Q11 => "q11",
        }
    }

    /// The text fields of events this query reads; a source parsing JSON
    /// copies only these (see [`Event::from_json_keeping`]).
    pub const fn text_fields(self) -> TextFields {
        match self {
            Query::Q0 | Query::Q1 => TextFields::EXTRA,
            Query::Q3 => TextFields::NAME.and(TextFields::CITY).and(TextFields::STATE),
            Query::Q8 => TextFields::NAME,
            Query::Q2 | Query::Q5 | Query::Q7 | Query::Q11 => TextFields::NONE,
        }
    }

    /// A JSON-line parser for this query's events: [`Event::from_json_keeping`]
    /// with [`Query::text_fields`] (a plain function, as sources take one).
    pub fn event_parser(self) -> fn(&[u8]) -> Result<Event, String> {
        fn keeping<const KEEP: u32>(bytes: &[u8]) -> Result<Event, String> {
            Event::from_json_keeping(bytes, TextFields(KEEP))
        }
        match self {
            Query::Q0 => keeping::<{ Query::Q0.text_fields().0 }>,
            Query::Q1 => keeping::<{ Query::Q1.text_fields().0 }>,
            Query::Q2 => keeping::<{ Query::Q2.text_fields().0 }>,
            Query::Q3 => keeping::<{ Query::Q3.text_fields().0 }>,
            Query::Q5 => keeping::<{ Query::Q5.text_fields().0 }>,
            Query::Q7 => keeping::<{ Query::Q7.text_fields().0 }>,
            Query::Q8 => keeping::<{ Query::Q8.text_fields().0 }>,
            Query::Q11 => keeping::<{ Query::Q11.text_fields().0 }>,
        }
    }
}

impl std::str::FromStr for Query {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Query::ALL
            .into_iter()
            .find(|q| q.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| match s.to_ascii_lowercase().as_str() {
                "q4" | "q6" => format!("{s} needs retractions, which weir's append-only output does not offer"),
                _ => format!("unknown Nexmark query `{s}` (known: q0, q1, q2, q3, q5, q7, q8, q11)"),
            })
    }
}

/// q0 / q1 output: a bid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BidRow {
    /// Auction id.
    pub auction: i64,
    /// Bidder id.
    pub bidder: i64,
    /// Price (q1: in euro cents, truncated).
    pub price: i64,
    /// Event time of the bid.
    #[serde(rename = "dateTime")]
    pub date_time: i64,
    /// The bid's extra.
    pub extra: Text,
}

/// q2 output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q2Row {
    /// Auction id.
    pub auction: i64,
    /// Price.
    pub price: i64,
}

/// q3 output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q3Row {
    /// The seller's name.
    pub name: Text,
    /// The seller's city.
    pub city: Text,
    /// The seller's state.
    pub state: Text,
    /// The auction's id.
    pub id: i64,
}

/// q5 output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q5Row {
    /// Auction id.
    pub auction: i64,
    /// Bids on it in the window (the window's maximum).
    pub num: i64,
    /// Window start.
    pub window_start: i64,
    /// Window end.
    pub window_end: i64,
}

/// q7 output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q7Row {
    /// Auction id.
    pub auction: i64,
    /// Bidder id.
    pub bidder: i64,
    /// Price (the window's maximum).
    pub price: i64,
    /// Event time of the bid.
    #[serde(rename = "dateTime")]
    pub date_time: i64,
    /// Window start.
    pub window_start: i64,
    /// Window end.
    pub window_end: i64,
}

/// q8 output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q8Row {
    /// Person id.
    pub id: i64,
    /// Person name.
    pub name: Text,
    /// Window start.
    pub window_start: i64,
}

/// q11 output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Q11Row {
    /// Bidder id.
    pub bidder: i64,
    /// Bids in the session.
    pub bid_count: i64,
    /// Time of the session's first bid.
    pub window_start: i64,
    /// Time of its last bid + 10 000.
    pub window_end: i64,
}

/// One result row of any query; serializes to the query's JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Row {
    /// q0, q1.
    Bid(BidRow),
    /// q2.
    Q2(Q2Row),
    /// q3.
    Q3(Q3Row),
    /// q5.
    Q5(Q5Row),
    /// q7.
    Q7(Q7Row),
    /// q8.
    Q8(Q8Row),
    /// q11.
    Q11(Q11Row),
}

impl Row {
    /// The row as one JSON object.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    /// Appends the row as one JSON object to `out`, without a `String` of
    /// its own (a sink writes millions of rows).
    pub fn write_json(&self, out: &mut String) {
        match self {
            // q0 and q1 write a row per bid: by hand, the same bytes as
            // serde_json (which escaped `extra` a byte at a time and checked
            // its own output's UTF-8 again: a third of a q0 run).
            Row::Bid(b) => {
                let mut n = itoa::Buffer::new();
                out.push_str("{\"auction\":");
                out.push_str(n.format(b.auction));
                out.push_str(",\"bidder\":");
                out.push_str(n.format(b.bidder));
                out.push_str(",\"price\":");
                out.push_str(n.format(b.price));
                out.push_str(",\"dateTime\":");
                out.push_str(n.format(b.date_time));
                out.push_str(",\"extra\":");
                write_json_str(&b.extra, out);
                out.push('}');
            }
            _ => {
                let start = out.len();
                // SAFETY: serde_json writes only UTF-8 (its own `to_string`
                // relies on that); after an error the bytes it wrote are cut
                // off at `start`, a char boundary, before the String is used.
                let bytes = unsafe { out.as_mut_vec() };
                if serde_json::to_writer(&mut *bytes, self).is_err() {
                    bytes.truncate(start); // not reached: rows always serialize
                }
            }
        }
    }
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it. Runs
/// without a quote or backslash are copied whole (found with SIMD), which
/// suits Nexmark's `extra` (a backslash every few dozen bytes).
fn write_json_str(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    out.push('"');
    if super::json::has_control(bytes) {
        // Control characters: rare; serde_json's own escaping.
        let quoted = serde_json::to_string(text).unwrap_or_default();
        let inner = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"'));
        out.push_str(inner.unwrap_or_default());
    } else {
        let mut start = 0;
        // Each hit is an ASCII byte, so `start` and `at` are char boundaries.
        for at in memchr::memchr2_iter(b'"', b'\\', bytes) {
            out.push_str(&text[start..at]);
            out.push('\\');
            out.push(bytes[at] as char);
            start = at + 1;
        }
        out.push_str(&text[start..]);
    }
    out.push('"');
}

/// A result row and the event time at which it became computable: the
/// event's time for q0–q3, the time the watermark (newest event − 4 s)
/// passes the window's end for windows. Latency measurements map it to
/// the wall-clock time the generator scheduled that event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The row.
    pub row: Row,
    /// Event time at which the row was due.
    pub due_ms: i64,
}

/// The bound on disorder of every Nexmark source: watermark = newest − 4 s − 1.
pub const OUT_OF_ORDERNESS_MS: i64 = 4_000;

/// When a window's result is due in event time: its last millisecond plus the watermark delay.
fn window_due(w: &Window) -> i64 {
    w.end.saturating_add(OUT_OF_ORDERNESS_MS)
}

fn bid_row(b: Bid) -> BidRow {
    BidRow {
        auction: b.auction,
        bidder: b.bidder,
        price: b.price,
        date_time: b.date_time,
        extra: b.extra,
    }
}

/// Builds `query` over `events`.
pub fn build(query: Query, events: Stream<Event>) -> Stream<Output> {
    match query {
        Query::Q0 => events.flat_map(|e: Event| match e {
            Event::Bid(b) => Some(Output {
                due_ms: b.date_time,
                row: Row::Bid(bid_row(b)),
            }),
            _ => None,
        }),
        Query::Q1 => events.flat_map(|e: Event| match e {
            Event::Bid(b) => Some(Output {
                due_ms: b.date_time,
                row: Row::Bid(BidRow {
                    price: b.price * 908 / 1000,
                    ..bid_row(b)
                }),
            }),
            _ => None,
        }),
        Query::Q2 => events.flat_map(|e: Event| match e {
            Event::Bid(b) if b.auction % 123 == 0 => Some(Output {
                due_ms: b.date_time,
                row: Row::Q2(Q2Row {
                    auction: b.auction,
                    price: b.price,
                }),
            }),
            _ => None,
        }),
        Query::Q3 => q3(events),
        Query::Q5 => q5(events),
        Query::Q7 => q7(events),
        Query::Q8 => q8(events),
        Query::Q11 => q11(events),
    }
}

/// A person as q3 keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seller {
    id: i64,
    name: Text,
    city: Text,
    state: Text,
    date_time: i64,
}

/// An auction as q3 and q8 keep it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sold {
    id: i64,
    seller: i64,
    date_time: i64,
}

fn q3(events: Stream<Event>) -> Stream<Output> {
    events
        .flat_map(|e: Event| match e {
            Event::Person(p) if matches!(&*p.state, "OR" | "ID" | "CA") => Some(Either::Left(Seller {
                id: p.id,
                name: p.name,
                city: p.city,
                state: p.state,
                date_time: p.date_time,
            })),
            Event::Auction(a) if a.category == 10 => Some(Either::Right(Sold {
                id: a.id,
                seller: a.seller,
                date_time: a.date_time,
            })),
            _ => None,
        })
        .key_by(|e: &Either<Seller, Sold>| match e {
            Either::Left(p) => p.id,
            Either::Right(a) => a.seller,
        })
        .process(
            "q3-join",
            InnerJoin {
                join: |_: &i64, p: &Seller, a: &Sold| Output {
                    due_ms: p.date_time.max(a.date_time),
                    row: Row::Q3(Q3Row {
                        name: p.name.clone(),
                        city: p.city.clone(),
                        state: p.state.clone(),
                        id: a.id,
                    }),
                },
            },
        )
        .uid("q3-join")
}

fn bids(events: Stream<Event>) -> Stream<Bid> {
    events.flat_map(|e: Event| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    })
}

/// Counts late records (never expected with the Nexmark bound) and drops them.
fn results<K: Send + 'static, O: Send + 'static, I: Send + 'static>(
    stream: Stream<(K, Windowed<O, I>)>,
    query: &'static str,
) -> Stream<(K, Window, O)> {
    let mut late: Option<metrics::Counter> = None;
    stream.flat_map(move |(k, w): (K, Windowed<O, I>)| match w {
        Windowed::Result { window, value } => Some((k, window, value)),
        Windowed::Late(_) => {
            late.get_or_insert_with(|| metrics::counter!("weir_nexmark_late_records_total", "query" => query))
                .increment(1);
            None
        }
    })
}

fn q5(events: Stream<Event>) -> Stream<Output> {
    let counts = bids(events)
        .map(|b: Bid| (b.auction, b.date_time))
        .key_by(|b: &(i64, i64)| b.0)
        .process(
            "q5-count",
            WindowAggregate::new(Sliding::of(10_000, 2_000), |b: &(i64, i64)| b.1, Count),
        )
        .uid("q5-count");
    results(counts, "q5")
        .key_by(|r: &(i64, Window, u64)| r.1.start)
        .process("q5-hottest", Hottest)
        .uid("q5-hottest")
}

/// q5's second step, keyed by window start: keeps the highest count of the
/// window and the auctions that have it, emits them when the window is done.
#[derive(Clone)]
struct Hottest;

impl KeyedProcess<i64, (i64, Window, u64), Output> for Hottest {
    /// (window end, highest count, auctions with it).
    type State = (i64, u64, Vec<i64>);

    fn process(
        &mut self,
        _start: &i64,
        state: &mut Option<Self::State>,
        (auction, window, count): (i64, Window, u64),
        ctx: &mut KeyedContext<'_, Output>,
    ) -> Result<(), OperatorError> {
        match state {
            None => {
                *state = Some((window.end, count, vec![auction]));
                ctx.register_event_timer(window.max_timestamp(), &[]);
            }
            Some((_, max, auctions)) => {
                if count > *max {
                    *max = count;
                    auctions.clear();
                }
                if count == *max {
                    auctions.push(auction);
                }
            }
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        start: &i64,
        state: &mut Option<Self::State>,
        _at: Timestamp,
        _namespace: &[u8],
        ctx: &mut KeyedContext<'_, Output>,
    ) -> Result<(), OperatorError> {
        if let Some((end, max, auctions)) = state.take() {
            let due_ms = window_due(&Window { start: *start, end });
            for auction in auctions {
                ctx.emit(Output {
                    due_ms,
                    row: Row::Q5(Q5Row {
                        auction,
                        num: max as i64,
                        window_start: *start,
                        window_end: end,
                    }),
                });
            }
        }
        Ok(())
    }
}

/// A bid as q7 keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PricedBid {
    auction: i64,
    bidder: i64,
    price: i64,
    date_time: i64,
}

const Q7_WINDOW: Tumbling = Tumbling {
    size: 10_000,
    offset: 0,
};

fn q7(events: Stream<Event>) -> Stream<Output> {
    bids(events)
        .map(|b: Bid| PricedBid {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price,
            date_time: b.date_time,
        })
        .key_by(|b: &PricedBid| Q7_WINDOW.assign(b.date_time).start)
        .process("q7-highest", HighestBid { late: None })
        .uid("q7-highest")
}

/// q7, keyed by window start: the highest price of the window so far and the
/// bids with it; emitted when the watermark passes the window's end.
#[derive(Clone)]
struct HighestBid {
    late: Option<metrics::Counter>,
}

impl KeyedProcess<i64, PricedBid, Output> for HighestBid {
    /// (highest price, bids with it).
    type State = (i64, Vec<PricedBid>);

    fn process(
        &mut self,
        start: &i64,
        state: &mut Option<Self::State>,
        bid: PricedBid,
        ctx: &mut KeyedContext<'_, Output>,
    ) -> Result<(), OperatorError> {
        let window = Q7_WINDOW.assign(*start);
        if window.max_timestamp() <= ctx.watermark() {
            self.late
                .get_or_insert_with(|| metrics::counter!("weir_nexmark_late_records_total", "query" => "q7"))
                .increment(1);
            return Ok(());
        }
        match state {
            None => {
                ctx.register_event_timer(window.max_timestamp(), &[]);
                *state = Some((bid.price, vec![bid]));
            }
            Some((max, ties)) => {
                if bid.price > *max {
                    *max = bid.price;
                    ties.clear();
                }
                if bid.price == *max {
                    ties.push(bid);
                }
            }
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        start: &i64,
        state: &mut Option<Self::State>,
        _at: Timestamp,
        _namespace: &[u8],
        ctx: &mut KeyedContext<'_, Output>,
    ) -> Result<(), OperatorError> {
        let window = Q7_WINDOW.assign(*start);
        if let Some((_, ties)) = state.take() {
            for b in ties {
                ctx.emit(Output {
                    due_ms: window_due(&window),
                    row: Row::Q7(Q7Row {
                        auction: b.auction,
                        bidder: b.bidder,
                        price: b.price,
                        date_time: b.date_time,
                        window_start: window.start,
                        window_end: window.end,
                    }),
                });
            }
        }
        Ok(())
    }
}

/// A person as q8 keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NewPerson {
    id: i64,
    name: Text,
    date_time: i64,
}

/// q8's window function: each distinct (id, name) of the persons, once.
fn new_users(id: &i64, window: Window, persons: Vec<NewPerson>, _auctions: Vec<Sold>, out: &mut Vec<Q8Row>) {
    let mut names: Vec<Text> = persons.into_iter().map(|p| p.name).collect();
    names.sort_unstable();
    names.dedup();
    out.extend(names.into_iter().map(|name| Q8Row {
        id: *id,
        name,
        window_start: window.start,
    }));
}

type NewUsers = fn(&i64, Window, Vec<NewPerson>, Vec<Sold>, &mut Vec<Q8Row>);

fn q8(events: Stream<Event>) -> Stream<Output> {
    let joined = events
        .flat_map(|e: Event| match e {
            Event::Person(p) => Some(Either::Left(NewPerson {
                id: p.id,
                name: p.name,
                date_time: p.date_time,
            })),
            Event::Auction(a) => Some(Either::Right(Sold {
                id: a.id,
                seller: a.seller,
                date_time: a.date_time,
            })),
            Event::Bid(_) => None,
        })
        .key_by(|e: &Either<NewPerson, Sold>| match e {
            Either::Left(p) => p.id,
            Either::Right(a) => a.seller,
        })
        .process(
            "q8-join",
            WindowJoin {
                assigner: Tumbling::of(10_000),
                left_time: |p: &NewPerson| p.date_time,
                right_time: |a: &Sold| a.date_time,
                function: new_users as NewUsers,
            },
        )
        .uid("q8-join");
    results(joined, "q8").map(|(_, window, row): (i64, Window, Q8Row)| Output {
        due_ms: window_due(&window),
        row: Row::Q8(row),
    })
}

fn q11(events: Stream<Event>) -> Stream<Output> {
    q11_sessions(q11_bids(events))
}

/// q11 up to its `key_by`: each bid's `(bidder, date_time)`. A distributed
/// q11 writes these to its repartition topic, keyed by bidder.
pub fn q11_bids(events: Stream<Event>) -> Stream<(i64, i64)> {
    bids(events).map(|b: Bid| (b.bidder, b.date_time))
}

/// q11 from its `key_by` on: 10 s session windows of bids per bidder.
pub fn q11_sessions(bids: Stream<(i64, i64)>) -> Stream<Output> {
    let sessions = bids
        .key_by(|b: &(i64, i64)| b.0)
        .process(
            "q11-sessions",
            SessionAggregate::new(10_000, |b: &(i64, i64)| b.1, Count),
        )
        .uid("q11-sessions");
    results(sessions, "q11").map(|(bidder, window, count): (i64, Window, u64)| Output {
        due_ms: window_due(&window),
        row: Row::Q11(Q11Row {
            bidder,
            bid_count: count as i64,
            window_start: window.start,
            window_end: window.end,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bid_row_is_written_as_serde_json_writes_it() {
        let cases = [
            "",
            "plain text",
            r#"a\b"c\\é✓\"#,
            r#""\"#,
            "quote \" backslash \\ tab \t nul \u{0} é ✓",
            "\u{1f}\u{7f}\"",
        ];
        for extra in cases {
            let row = Row::Bid(BidRow {
                auction: 1001,
                bidder: -7,
                price: i64::MAX,
                date_time: i64::MIN,
                extra: Text::Owned(extra.to_string()),
            });
            let mut out = String::from("before|");
            row.write_json(&mut out);
            assert_eq!(out, format!("before|{}", serde_json::to_string(&row).unwrap()));
        }
        let row = Row::Q5(Q5Row {
            auction: 1,
            num: 2,
            window_start: 3,
            window_end: 4,
        });
        assert_eq!(row.to_json(), serde_json::to_string(&row).unwrap());
    }
}
