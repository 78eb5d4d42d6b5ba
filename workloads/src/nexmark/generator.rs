//! The Nexmark event generator, after Apache Beam's (the reference the
//! nexmark/nexmark Flink harness was forked from): event `id` is a person
//! when `id % 50 == 0`, an auction when it is 1..=3, else a bid (1:3:46);
//! person and auction ids count from 1000; sellers, bidders and auctions are
//! "hot" with Beam's default ratios; every event draws its fields from a
//! `java.util.Random` seeded with its id (xor the configured seed), so event
//! `id` is the same whatever the parallelism or the order of generation.
//! Bids carry `channel` and `url` as in nexmark/nexmark (the bidder id gets
//! 1000 added once, as in Beam), and `extra` padding is cut from one fixed
//! random string as nexmark/nexmark does (Beam draws every character).
//!
//! Event time: event `n` happens at `base_time_ms + n * 1e6 / events_per_second
//! / 1000` (one timeline: 10 000 events per second of event time by default).

use crate::nexmark::model::{Auction, Bid, Event, Person, Text};
use std::borrow::Cow;
use weir::connectors::{ConnectorContext, Source, SourcePoll};
use weir::{Result, WeirError};
use weir_operators::Timestamp;

/// The generator's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratorConfig {
    /// Events in total; `None` = endless.
    pub events: Option<u64>,
    /// Wall-clock pacing in events per second (all subtasks); `None` = as fast as possible.
    pub rate: Option<u64>,
    /// Events per second of *event time* (Nexmark's `firstEventRate`, default 10 000).
    pub event_time_rate: u64,
    /// Event time of event 0 (Beam: 2015-07-15T00:00:00Z).
    pub base_time_ms: i64,
    /// Xor-ed into every event's seed (0 = Beam's events).
    pub seed: u64,
    /// Watermark = newest event time − this − 1 (the Nexmark queries' 4 s bound).
    pub out_of_orderness_ms: i64,
    /// With `rate`: the wall-clock time ([`weir::clock::now_ns`]) at which
    /// this run's first event is due (default: when the subtask starts).
    /// Latency measurements use the same origin.
    pub pace_origin_ns: Option<u64>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            events: None,
            rate: None,
            event_time_rate: 10_000,
            base_time_ms: 1_436_918_400_000,
            seed: 0,
            out_of_orderness_ms: 4_000,
            pace_origin_ns: None,
        }
    }
}

impl GeneratorConfig {
    /// The event time of event `n`.
    pub fn timestamp_of(&self, n: u64) -> i64 {
        let delay_us = 1_000_000.0 / self.event_time_rate.max(1) as f64;
        self.base_time_ms + (n as f64 * delay_us) as i64 / 1000
    }

    /// The first event whose event time is at or after `ts`.
    pub fn first_event_at(&self, ts: i64) -> u64 {
        let per_ms = self.event_time_rate.max(1) as f64 / 1000.0;
        let guess = (((ts - self.base_time_ms) as f64) * per_ms).max(0.0) as u64;
        // Correct for rounding in either direction.
        let mut n = guess.saturating_sub(2);
        while self.timestamp_of(n) < ts {
            n += 1;
        }
        n
    }
}

const PROPORTION: u64 = 50;
const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: i32 = 5;
const PERSON_ID_LEAD: i64 = 10;
const AUCTION_ID_LEAD: i64 = 10;
const HOT_BUCKET: i64 = 100;
const HOT_AUCTION_RATIO: i32 = 2;
const HOT_SELLER_RATIO: i32 = 4;
const HOT_BIDDER_RATIO: i32 = 4;
const NUM_ACTIVE_PEOPLE: i64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
const AVG_PERSON_BYTES: i32 = 200;
const AVG_AUCTION_BYTES: i32 = 500;
const AVG_BID_BYTES: i32 = 100;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const HOT_URLS: [&str; 4] = [
    "https://www.nexmark.com/ggl/item.htm?query=1",
    "https://www.nexmark.com/fb/item.htm?query=1",
    "https://www.nexmark.com/bd/item.htm?query=1",
    "https://www.nexmark.com/apl/item.htm?query=1",
];

/// `java.util.Random`, so that event `id` matches Beam's `new Random(id)`.
struct JavaRandom(u64);

impl JavaRandom {
    const MULTIPLIER: u64 = 0x5_DEEC_E66D;
    const MASK: u64 = (1 << 48) - 1;

    fn new(seed: u64) -> Self {
        JavaRandom((seed ^ Self::MULTIPLIER) & Self::MASK)
    }

    fn next(&mut self, bits: u32) -> i32 {
        self.0 = (self.0.wrapping_mul(Self::MULTIPLIER).wrapping_add(0xB)) & Self::MASK;
        (self.0 >> (48 - bits)) as i64 as i32
    }

    fn next_int(&mut self) -> i32 {
        self.next(32)
    }

    /// Uniform in `[0, bound)`, `bound > 0`.
    fn next_int_below(&mut self, bound: i32) -> i32 {
        if bound & -bound == bound {
            return ((i64::from(bound) * i64::from(self.next(31))) >> 31) as i32;
        }
        loop {
            let bits = self.next(31);
            let val = bits % bound;
            if bits.wrapping_sub(val).wrapping_add(bound - 1) >= 0 {
                return val;
            }
        }
    }

    fn next_long(&mut self) -> i64 {
        (i64::from(self.next(32)) << 32).wrapping_add(i64::from(self.next(32)))
    }

    /// Beam's `LongGenerator.nextLong(random, n)`.
    fn next_long_below(&mut self, n: i64) -> i64 {
        if n < i64::from(i32::MAX) {
            i64::from(self.next_int_below(n.max(1) as i32))
        } else {
            (self.next_long() % n).abs()
        }
    }

    fn next_double(&mut self) -> f64 {
        ((i64::from(self.next(26)) << 27) + i64::from(self.next(27))) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

// Beam's formula, general in the proportions (with one person per 50 events the `min` is constant).
#[allow(clippy::unnecessary_min_or_max)]
#[inline]
fn last_base0_person_id(event_id: u64) -> i64 {
    let epoch = event_id / PROPORTION;
    let offset = (event_id % PROPORTION).min(PERSON_PROPORTION - 1);
    (epoch * PERSON_PROPORTION + offset) as i64
}

#[inline]
fn next_base0_person_id(event_id: u64, r: &mut JavaRandom) -> i64 {
    let num_people = last_base0_person_id(event_id) + 1;
    let active = num_people.min(NUM_ACTIVE_PEOPLE);
    let n = r.next_long_below(active + PERSON_ID_LEAD);
    num_people - active + n
}

#[inline]
fn last_base0_auction_id(event_id: u64) -> i64 {
    let mut epoch = (event_id / PROPORTION) as i64;
    let mut offset = (event_id % PROPORTION) as i64;
    let (person, auction) = (PERSON_PROPORTION as i64, AUCTION_PROPORTION as i64);
    if offset < person {
        epoch -= 1;
        offset = auction - 1;
    } else if offset >= person + auction {
        offset = auction - 1;
    } else {
        offset -= person;
    }
    epoch * auction + offset
}

#[inline]
fn next_base0_auction_id(event_id: u64, r: &mut JavaRandom) -> i64 {
    let max = last_base0_auction_id(event_id);
    let min = (max - NUM_IN_FLIGHT_AUCTIONS).max(0);
    min + r.next_long_below(max - min + 1 + AUCTION_ID_LEAD)
}

#[inline]
fn next_price(r: &mut JavaRandom) -> i64 {
    (10f64.powf(r.next_double() * 6.0) * 100.0).round() as i64
}

fn next_string(r: &mut JavaRandom, max_length: i32) -> String {
    let len = 3 + r.next_int_below(max_length - 3);
    let mut s = String::with_capacity(len as usize);
    for _ in 0..len {
        if r.next_int_below(13) == 0 {
            s.push(' ');
        } else {
            s.push((b'a' + r.next_int_below(26) as u8) as char);
        }
    }
    s.trim().to_string()
}

fn next_exact_string(r: &mut JavaRandom, length: i32) -> String {
    let length = length.max(0) as usize;
    let mut bytes = Vec::with_capacity(length);
    // Six characters per random int, as Beam draws them.
    while bytes.len() < length {
        let mut rnd = r.next_int();
        for _ in 0..(length - bytes.len()).min(6) {
            // Java's remainder keeps the sign: characters from 'H' to 'z' (all ASCII), as in Beam.
            bytes.push((i32::from(b'a') + rnd % 26) as u8);
            rnd /= 26;
        }
    }
    String::from_utf8(bytes).unwrap_or_default()
}

/// The 10 000 non-hot (channel, url) pairs of bids, made once: the texts
/// in one leaked arena, the table 32 bytes per pair (320 KB, so a random
/// pick mostly hits the CPU cache).
fn channel_urls() -> &'static [(&'static str, &'static str)] {
    static TABLE: std::sync::OnceLock<Vec<(&'static str, &'static str)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut arena = String::new();
        let mut spans = Vec::with_capacity(10_000);
        for n in 0..10_000 {
            let start = arena.len();
            arena.push_str(&format!("channel-{n}"));
            let middle = arena.len();
            arena.push_str(&format!("https://www.nexmark.com/c{n}/item.htm?query=1&channel_id={n}"));
            spans.push((start, middle, arena.len()));
        }
        let arena: &'static str = Box::leak(arena.into_boxed_str());
        spans
            .into_iter()
            .map(|(start, middle, end)| (&arena[start..middle], &arena[middle..end]))
            .collect()
    })
}

/// Padding of `size` characters, cut from one fixed 64 KiB random string at
/// an offset drawn from the event's random (as nexmark/nexmark's generator
/// does): one draw instead of one per six characters, which made `extra`
/// 40 % of the generator's time. Deterministic: the string has a fixed seed.
#[inline]
fn next_extra(r: &mut JavaRandom, current: i32, desired_average: i32) -> Text {
    const EXTRA_POOL: usize = 1 << 16;
    static POOL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if current > desired_average {
        return Cow::Borrowed("");
    }
    let desired = desired_average - current;
    let delta = (f64::from(desired) * 0.2).round() as i32;
    let min = desired - delta;
    let size = (min + if delta == 0 { 0 } else { r.next_int_below(2 * delta) }).max(0) as usize;
    let pool = POOL.get_or_init(|| next_exact_string(&mut JavaRandom::new(0x6E78_6D6B), EXTRA_POOL as i32));
    let size = size.min(EXTRA_POOL);
    let offset = r.next_int_below((EXTRA_POOL - size).max(1) as i32) as usize;
    Cow::Borrowed(pool.get(offset..offset + size).unwrap_or_default())
}

/// Event number `id` of the generator configured by `config`.
pub fn nexmark_event(id: u64, config: &GeneratorConfig) -> Event {
    let mut r = JavaRandom::new(id ^ config.seed);
    let ts = config.timestamp_of(id);
    let offset = id % PROPORTION;
    if offset < PERSON_PROPORTION {
        Event::Person(person(id, ts, &mut r))
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        Event::Auction(auction(id, ts, &mut r, config))
    } else {
        Event::Bid(bid(id, ts, &mut r))
    }
}

fn person(id: u64, ts: i64, r: &mut JavaRandom) -> Person {
    let name = format!(
        "{} {}",
        FIRST_NAMES[r.next_int_below(11) as usize],
        LAST_NAMES[r.next_int_below(9) as usize]
    );
    let email_address = format!("{}@{}.com", next_string(r, 7), next_string(r, 5));
    let credit_card = (0..4)
        .map(|_| format!("{:04}", r.next_int_below(10_000)))
        .collect::<Vec<_>>()
        .join(" ");
    let city = US_CITIES[r.next_int_below(10) as usize];
    let state = US_STATES[r.next_int_below(6) as usize];
    let size = 8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
    let extra = next_extra(r, size as i32, AVG_PERSON_BYTES);
    Person {
        id: last_base0_person_id(id) + FIRST_PERSON_ID,
        name: name.into(),
        email_address: email_address.into(),
        credit_card: credit_card.into(),
        city: city.into(),
        state: state.into(),
        date_time: ts,
        extra,
    }
}

fn auction(id: u64, ts: i64, r: &mut JavaRandom, config: &GeneratorConfig) -> Auction {
    let seller = if r.next_int_below(HOT_SELLER_RATIO) > 0 {
        (last_base0_person_id(id) / HOT_BUCKET) * HOT_BUCKET
    } else {
        next_base0_person_id(id, r)
    } + FIRST_PERSON_ID;
    let category = FIRST_CATEGORY_ID + i64::from(r.next_int_below(NUM_CATEGORIES));
    let initial_bid = next_price(r);
    // Beam's nextAuctionLengthMs: up to twice the time until ~100 more auctions.
    let horizon = config.timestamp_of(id + (NUM_IN_FLIGHT_AUCTIONS as u64 * PROPORTION) / AUCTION_PROPORTION) - ts;
    let expires = ts + 1 + r.next_long_below((horizon * 2).max(1));
    let item_name = next_string(r, 20);
    let description = next_string(r, 100);
    let reserve = initial_bid + next_price(r);
    let size = 8 + item_name.len() + description.len() + 40;
    let extra = next_extra(r, size as i32, AVG_AUCTION_BYTES);
    Auction {
        id: last_base0_auction_id(id) + FIRST_AUCTION_ID,
        item_name: item_name.into(),
        description: description.into(),
        initial_bid,
        reserve,
        date_time: ts,
        expires,
        seller,
        category,
        extra,
    }
}

#[inline]
fn bid(id: u64, ts: i64, r: &mut JavaRandom) -> Bid {
    let auction = if r.next_int_below(HOT_AUCTION_RATIO) > 0 {
        (last_base0_auction_id(id) / HOT_BUCKET) * HOT_BUCKET
    } else {
        next_base0_auction_id(id, r)
    } + FIRST_AUCTION_ID;
    let bidder = if r.next_int_below(HOT_BIDDER_RATIO) > 0 {
        (last_base0_person_id(id) / HOT_BUCKET) * HOT_BUCKET + 1
    } else {
        next_base0_person_id(id, r)
    } + FIRST_PERSON_ID;
    let price = next_price(r);
    let (channel, url) = if r.next_int_below(2) > 0 {
        let i = r.next_int_below(4) as usize;
        (Cow::Borrowed(HOT_CHANNELS[i]), Cow::Borrowed(HOT_URLS[i]))
    } else {
        let (channel, url) = channel_urls()[r.next_int_below(10_000) as usize];
        (Cow::Borrowed(channel), Cow::Borrowed(url))
    };
    let extra = next_extra(r, 32, AVG_BID_BYTES);
    Bid {
        auction,
        bidder,
        price,
        channel,
        url,
        date_time: ts,
        extra,
    }
}

/// A generator subtask: subtask `j` of `p` emits events `k * p + j` for
/// `k = 0, 1, ...`; its checkpointed position is the next `k`. Watermark:
/// the newest event time − `out_of_orderness_ms` − 1.
pub struct NexmarkGenerator {
    config: GeneratorConfig,
    subtask: u64,
    parallelism: u64,
    next_k: u64,
    end_k: Option<u64>,
    pace: Option<weir::connectors::pace::Pace>,
    newest: Option<i64>,
    generated: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl NexmarkGenerator {
    /// A factory for [`weir::JobBuilder::source`].
    pub fn factory(config: GeneratorConfig) -> impl Fn(ConnectorContext) -> Result<NexmarkGenerator> + Clone + Send {
        move |ctx| NexmarkGenerator::new(&ctx, config)
    }

    /// Subtask `ctx.subtask`, resumed from `ctx.restored`.
    ///
    /// # Errors
    /// A malformed restored position or a zero rate, naming the source.
    pub fn new(ctx: &ConnectorContext, config: GeneratorConfig) -> Result<Self> {
        let err = |message: String| WeirError::Connector {
            connector: format!("{}[{}]", ctx.uid, ctx.subtask),
            message,
        };
        let next_k = match &ctx.restored {
            None => 0,
            Some(b) => u64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| err(format!("restored generator position has {} bytes, expected 8", b.len())))?,
            ),
        };
        if config.event_time_rate == 0 {
            return Err(err("event_time_rate must be > 0".into()));
        }
        let (subtask, parallelism) = (ctx.subtask as u64, ctx.parallelism.max(1) as u64);
        let end_k = config.events.map(|n| {
            if n > subtask {
                (n - subtask).div_ceil(parallelism)
            } else {
                0
            }
        });
        let pace = match config.rate {
            Some(0) => return Err(err("rate must be > 0".into())),
            Some(r) => Some(weir::connectors::pace::Pace::new(
                r as f64 / parallelism as f64,
                config.pace_origin_ns.unwrap_or_else(weir::clock::now_ns),
                next_k,
            )),
            None => None,
        };
        let newest = next_k
            .checked_sub(1)
            .map(|k| config.timestamp_of(k * parallelism + subtask));
        Ok(NexmarkGenerator {
            config,
            subtask,
            parallelism,
            next_k,
            end_k,
            pace,
            newest,
            generated: None,
        })
    }

    /// Adds every event generated to `counter` (shared by the subtasks).
    pub fn counting(mut self, counter: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.generated = Some(counter);
        self
    }
}

impl Source<Event> for NexmarkGenerator {
    fn poll(&mut self, out: &mut Vec<Event>, max: usize) -> Result<SourcePoll> {
        let mut n = max as u64;
        if let Some(end) = self.end_k {
            n = n.min(end.saturating_sub(self.next_k));
            if n == 0 {
                return Ok(SourcePoll::End);
            }
        }
        if let Some(pace) = &self.pace {
            n = match pace.due(self.next_k, n, weir::clock::now_ns()) {
                Ok(due) => due,
                Err(wait) => return Ok(SourcePoll::Idle(wait)),
            };
        }
        for k in self.next_k..self.next_k + n {
            let event = nexmark_event(k * self.parallelism + self.subtask, &self.config);
            self.newest = Some(self.newest.map_or(event.date_time(), |t| t.max(event.date_time())));
            out.push(event);
        }
        self.next_k += n;
        if let Some(counter) = &self.generated {
            counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(SourcePoll::Ready)
    }

    fn watermark(&mut self) -> Option<Timestamp> {
        self.newest.map(|t| Timestamp(t - self.config.out_of_orderness_ms - 1))
    }

    fn position(&mut self) -> Result<Vec<u8>> {
        Ok(self.next_k.to_be_bytes().to_vec())
    }

    fn describe_position(&self) -> String {
        format!("next={}", self.next_k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_random_matches_the_jdk() {
        // new java.util.Random(42): nextInt() = -1170105035, nextInt(10) = 0 then 3.
        let mut r = JavaRandom::new(42);
        assert_eq!(r.next_int(), -1_170_105_035);
        let mut r = JavaRandom::new(42);
        assert_eq!((r.next_int_below(10), r.next_int_below(10)), (0, 3));
        // new Random(0).nextDouble() = 0.730967787376657
        assert!((JavaRandom::new(0).next_double() - 0.730_967_787_376_657).abs() < 1e-15);
        // new Random(7): nextLong(), nextInt(1 << 20), nextInt(1000), checked with the JDK 17 here.
        let mut r = JavaRandom::new(7);
        assert_eq!(r.next_long(), -4_967_725_919_621_401_576);
        assert_eq!((r.next_int_below(1 << 20), r.next_int_below(1000)), (785_561, 44));
    }

    #[test]
    fn events_follow_the_nexmark_proportions_and_ids() {
        let config = GeneratorConfig::default();
        let events: Vec<Event> = (0..5000).map(|i| nexmark_event(i, &config)).collect();
        let persons = events.iter().filter(|e| matches!(e, Event::Person(_))).count();
        let auctions = events.iter().filter(|e| matches!(e, Event::Auction(_))).count();
        assert_eq!((persons, auctions, events.len() - persons - auctions), (100, 300, 4600));
        match (&events[0], &events[1], &events[3], &events[50]) {
            (Event::Person(p0), Event::Auction(a1), Event::Auction(a3), Event::Person(p1)) => {
                assert_eq!((p0.id, a1.id, a3.id, p1.id), (1000, 1000, 1002, 1001));
                assert!(a1.seller >= 1000 && (10..15).contains(&a1.category));
            }
            other => panic!("{other:?}"),
        }
        // Deterministic, monotone event time: 10 000 events per second.
        assert_eq!(nexmark_event(777, &config), events[777]);
        assert_eq!(events[10_00].date_time() - events[0].date_time(), 100);
        for e in &events {
            if let Event::Bid(b) = e {
                assert!(
                    b.auction >= 1000 && b.bidder >= 1000 && (100..=100_000_000).contains(&b.price),
                    "{b:?}"
                );
                assert!(!b.extra.is_empty() && !b.channel.is_empty());
            }
        }
    }

    #[test]
    fn first_event_at_inverts_timestamp_of() {
        let config = GeneratorConfig::default();
        for ts in [
            config.base_time_ms,
            config.base_time_ms + 1,
            config.base_time_ms + 12_345,
        ] {
            let n = config.first_event_at(ts);
            assert!(config.timestamp_of(n) >= ts && (n == 0 || config.timestamp_of(n - 1) < ts));
        }
    }
}
