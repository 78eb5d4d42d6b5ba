//! A parser for the one JSON shape Nexmark events have: a flat object of
//! known keys with string and integer values. It reads the bytes once, with
//! no intermediate tokens, and was 3× faster than `serde_json` on the
//! events file (most of a `--source-file` run's time was parsing).
//!
//! It returns `None` on anything outside that shape (an unknown or repeated
//! key, `null`, a fraction, nesting, a `\u` escape, malformed input); the
//! caller then parses the line with `serde_json`, which gives the exact
//! answer or the exact error. So the fast path never changes what a line
//! means, only how fast a common one is read.

use super::model::{Event, RawEvent};
use std::borrow::Cow;

/// The text fields of an event, as a set: which ones a query reads.
/// Text the query does not read is checked (valid JSON string, valid UTF-8)
/// but not copied, so a parsed event owns only the strings it needs; the
/// others are empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextFields(pub(super) u32);

impl TextFields {
    /// Every text field.
    pub const ALL: TextFields = TextFields(u32::MAX);
    /// No text field.
    pub const NONE: TextFields = TextFields(0);
    /// `name` (persons).
    pub const NAME: TextFields = TextFields(1 << 2);
    /// `city` (persons).
    pub const CITY: TextFields = TextFields(1 << 5);
    /// `state` (persons).
    pub const STATE: TextFields = TextFields(1 << 6);
    /// `extra` (every type).
    pub const EXTRA: TextFields = TextFields(1 << 20);

    /// Both sets.
    pub const fn and(self, other: TextFields) -> TextFields {
        TextFields(self.0 | other.0)
    }
}

/// The event of `bytes` (or what its fields lack), if it is a flat object
/// this parser handles, with the text fields outside `keep` left empty.
pub(super) fn parse(bytes: &[u8], keep: TextFields) -> Option<Result<Event, String>> {
    // UTF-8 checked once for the line (SIMD: std's check was 9 % of a q0
    // run), so each string is a slice of it.
    let text = simdutf8::basic::from_utf8(bytes).ok()?;
    let mut p = Parser {
        text,
        bytes,
        at: 0,
        keep: keep.0,
    };
    let mut raw = RawEvent::default();
    let mut seen = 0u32;
    p.skip_ws();
    p.eat(b'{')?;
    p.skip_ws();
    if p.peek()? == b'}' {
        p.at += 1;
    } else {
        // The keys still expected in producer order (after the `type`).
        let mut expected: &[(&[u8], Field)] = &[];
        loop {
            p.skip_ws();
            let field = match expected.split_first() {
                Some(((pattern, field), rest)) if p.bytes[p.at..].starts_with(pattern) => {
                    p.at += pattern.len();
                    expected = rest;
                    *field
                }
                _ => {
                    expected = &[]; // another order: every key is looked up
                    let key = p.plain_key()?;
                    p.skip_ws();
                    p.eat(b':')?;
                    key_field(key)?
                }
            };
            p.skip_ws();
            let bit = p.value(field, &mut raw)?;
            if let Field::Type = field {
                expected = keys_after_type(&raw.kind);
            }
            if seen & bit != 0 {
                return None; // a repeated key: serde_json says which
            }
            seen |= bit;
            p.skip_ws();
            match p.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    p.skip_ws();
    // Without a `type`, serde_json names the missing field.
    if p.at != bytes.len() || seen & 1 == 0 {
        return None;
    }
    // Built here from the fields in place: returning the ~400-byte field set
    // to build the event outside copied it (6 % of a q0 run).
    Some(raw.into_event())
}

/// An event field: its number is its bit in the set of keys seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Type = 0,
    Id = 1,
    Name = 2,
    EmailAddress = 3,
    CreditCard = 4,
    City = 5,
    State = 6,
    ItemName = 7,
    Description = 8,
    InitialBid = 9,
    Reserve = 10,
    Expires = 11,
    Seller = 12,
    Category = 13,
    Auction = 14,
    Bidder = 15,
    Price = 16,
    Channel = 17,
    Url = 18,
    DateTime = 19,
    Extra = 20,
}

/// The field of a key; `None` for a key this parser leaves to `serde_json`.
fn key_field(key: &[u8]) -> Option<Field> {
    Some(match key {
        b"type" => Field::Type,
        b"id" => Field::Id,
        b"name" => Field::Name,
        b"emailAddress" => Field::EmailAddress,
        b"creditCard" => Field::CreditCard,
        b"city" => Field::City,
        b"state" => Field::State,
        b"itemName" => Field::ItemName,
        b"description" => Field::Description,
        b"initialBid" => Field::InitialBid,
        b"reserve" => Field::Reserve,
        b"expires" => Field::Expires,
        b"seller" => Field::Seller,
        b"category" => Field::Category,
        b"auction" => Field::Auction,
        b"bidder" => Field::Bidder,
        b"price" => Field::Price,
        b"channel" => Field::Channel,
        b"url" => Field::Url,
        b"dateTime" => Field::DateTime,
        b"extra" => Field::Extra,
        _ => return None,
    })
}

/// The keys after `"type"` in the order Nexmark producers write them (the
/// reference generator's, serde's field order), as whole `"key":` runs: a
/// line in that order skips finding and looking up each key.
fn keys_after_type(kind: &str) -> &'static [(&'static [u8], Field)] {
    match kind {
        "bid" => &[
            (b"\"auction\":", Field::Auction),
            (b"\"bidder\":", Field::Bidder),
            (b"\"price\":", Field::Price),
            (b"\"channel\":", Field::Channel),
            (b"\"url\":", Field::Url),
            (b"\"dateTime\":", Field::DateTime),
            (b"\"extra\":", Field::Extra),
        ],
        "person" => &[
            (b"\"id\":", Field::Id),
            (b"\"name\":", Field::Name),
            (b"\"emailAddress\":", Field::EmailAddress),
            (b"\"creditCard\":", Field::CreditCard),
            (b"\"city\":", Field::City),
            (b"\"state\":", Field::State),
            (b"\"dateTime\":", Field::DateTime),
            (b"\"extra\":", Field::Extra),
        ],
        "auction" => &[
            (b"\"id\":", Field::Id),
            (b"\"itemName\":", Field::ItemName),
            (b"\"description\":", Field::Description),
            (b"\"initialBid\":", Field::InitialBid),
            (b"\"reserve\":", Field::Reserve),
            (b"\"dateTime\":", Field::DateTime),
            (b"\"expires\":", Field::Expires),
            (b"\"seller\":", Field::Seller),
            (b"\"category\":", Field::Category),
            (b"\"extra\":", Field::Extra),
        ],
        _ => &[],
    }
}

/// Whether `bytes` holds a control character (below 0x20), which a JSON
/// string may not hold raw: eight bytes at a time (a byte-by-byte scan of
/// each row's `extra` was 4 % of a q0 run's instructions).
pub(super) fn has_control(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        // Some byte is below 0x20 exactly when this is non-zero (the
        // "has less than" bit trick; exact as a yes/no for limits <= 0x80).
        if x.wrapping_sub(0x20 * ONES) & !x & HIGH != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b < 0x20)
}

/// Digits [`Parser::integer`] reads without overflow checks (10^18 < 2^63).
const MAX_UNCHECKED_DIGITS: usize = 18;

struct Parser<'a> {
    /// The line, valid UTF-8, and its bytes.
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    /// The text fields to copy (`TextFields`).
    keep: u32,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A key without escapes, as bytes.
    fn plain_key(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = &self.bytes[self.at..];
        // Keys are a few bytes: a plain loop beats setting up a SIMD search.
        let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
        if rest[end] != b'"' {
            return None;
        }
        self.at += end + 1;
        Some(&rest[..end])
    }

    /// A string value, unescaped; `\u` escapes are left to `serde_json`.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let from = self.at;
        let rest = &self.bytes[from..];
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] == b'"' {
            if has_control(&rest[..end]) {
                return None; // raw control characters: serde_json refuses the line
            }
            self.at += end + 1;
            // Cut at ASCII quotes: always on character boundaries.
            return self.text.get(from..from + end).map(Cow::Borrowed);
        }
        // Escapes: copy the pieces between them.
        let mut out = String::with_capacity(rest.len().min(256));
        let mut i = 0;
        loop {
            let piece = memchr::memchr2(b'"', b'\\', &rest[i..])?;
            if has_control(&rest[i..i + piece]) {
                return None;
            }
            out.push_str(self.text.get(from + i..from + i + piece)?);
            i += piece;
            if rest[i] == b'"' {
                self.at += i + 1;
                return Some(Cow::Owned(out));
            }
            let unescaped = match rest.get(i + 1)? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                _ => return None,
            };
            out.push(unescaped);
            i += 2;
        }
    }

    /// An integer that fits `i64` (no fraction, no exponent).
    fn integer(&mut self) -> Option<i64> {
        let negative = self.peek()? == b'-';
        if negative {
            self.at += 1;
        }
        let start = self.at;
        let rest = &self.bytes[start..];
        // Up to 18 digits cannot overflow: accumulated without a check per
        // digit (the checked loop was 8 % of a parse-bound run).
        let mut value: u64 = 0;
        let mut digits = 0;
        while let Some(d @ b'0'..=b'9') = rest.get(digits).copied() {
            if digits == MAX_UNCHECKED_DIGITS {
                return self.long_integer(start, negative);
            }
            value = value * 10 + u64::from(d - b'0');
            digits += 1;
        }
        self.at += digits;
        // No digits, a leading zero (JSON forbids it), or a fraction/exponent.
        let leading_zero = digits > 1 && rest[0] == b'0';
        if digits == 0 || leading_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        if negative && value == 0 {
            return None; // `-0`: serde_json reads a float, which an integer field refuses
        }
        let value = value as i64; // < 10^18 < 2^63
        Some(if negative { -value } else { value })
    }

    /// [`Parser::integer`] of 19 digits or more, from `start`: checked per digit.
    fn long_integer(&mut self, start: usize, negative: bool) -> Option<i64> {
        self.at = start;
        let mut value: i64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            let digit = i64::from(d - b'0');
            value = value.checked_mul(10)?;
            value = if negative {
                value.checked_sub(digit)?
            } else {
                value.checked_add(digit)?
            };
            self.at += 1;
        }
        // 19+ digits: no leading zero is possible for a value that fits.
        let leading_zero = self.bytes[start] == b'0';
        if leading_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(value)
    }

    /// Passes over a string value, checking its escapes as [`Parser::string`]
    /// does but building nothing.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        let rest = &self.bytes[self.at..];
        let mut i = 0;
        loop {
            let piece = memchr::memchr2(b'"', b'\\', &rest[i..])?;
            if has_control(&rest[i..i + piece]) {
                return None;
            }
            i += piece;
            if rest[i] == b'"' {
                self.at += i + 1;
                return Some(());
            }
            match rest.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                _ => return None,
            }
        }
    }

    /// The text field `bit`: owned if kept, else checked and left empty
    /// (an empty `String` allocates nothing).
    fn text(&mut self, bit: u32) -> Option<Option<String>> {
        if self.keep & bit == 0 {
            self.skip_string()?;
            return Some(Some(String::new()));
        }
        Some(Some(self.string()?.into_owned()))
    }

    /// Reads the value of `field` into `raw`; returns the field's bit,
    /// `None` for a value this parser leaves to `serde_json`.
    fn value(&mut self, field: Field, raw: &mut RawEvent<'a>) -> Option<u32> {
        let bit = 1 << field as u32;
        match field {
            Field::Type => {
                raw.kind = self.string()?;
            }
            Field::Id => {
                raw.id = Some(self.integer()?);
            }
            Field::Name => {
                raw.name = self.text(bit)?;
            }
            Field::EmailAddress => {
                raw.email_address = self.text(bit)?;
            }
            Field::CreditCard => {
                raw.credit_card = self.text(bit)?;
            }
            Field::City => {
                raw.city = self.text(bit)?;
            }
            Field::State => {
                raw.state = self.text(bit)?;
            }
            Field::ItemName => {
                raw.item_name = self.text(bit)?;
            }
            Field::Description => {
                raw.description = self.text(bit)?;
            }
            Field::InitialBid => {
                raw.initial_bid = Some(self.integer()?);
            }
            Field::Reserve => {
                raw.reserve = Some(self.integer()?);
            }
            Field::Expires => {
                raw.expires = Some(self.integer()?);
            }
            Field::Seller => {
                raw.seller = Some(self.integer()?);
            }
            Field::Category => {
                raw.category = Some(self.integer()?);
            }
            Field::Auction => {
                raw.auction = Some(self.integer()?);
            }
            Field::Bidder => {
                raw.bidder = Some(self.integer()?);
            }
            Field::Price => {
                raw.price = Some(self.integer()?);
            }
            Field::Channel => {
                raw.channel = self.text(bit)?;
            }
            Field::Url => {
                raw.url = self.text(bit)?;
            }
            Field::DateTime => {
                raw.date_time = Some(self.integer()?);
            }
            Field::Extra => {
                raw.extra = self.text(bit)?;
            }
        }
        Some(bit)
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, TextFields};
    use crate::nexmark::model::Event;

    /// What `serde_json` makes of the line (the reference).
    fn slow(line: &str) -> Result<Event, String> {
        let raw: super::RawEvent<'_> = serde_json::from_str(line).map_err(|e| e.to_string())?;
        raw.into_event()
    }

    #[test]
    fn common_lines_parse_as_serde_json_parses_them() {
        let lines = [
            r#"{"type":"bid","auction":1000,"bidder":1001,"price":32530001,"channel":"Google","url":"https://x/y?a=1","dateTime":1436918400000,"extra":"ab\\c\"d\/e\tf"}"#,
            r#" { "type" : "person", "id":-5, "name":"Ann Lee", "emailAddress":"a@b.com", "creditCard":"1 2", "city":"Bend", "state":"OR", "dateTime":5, "extra":"é" } "#,
            r#"{"type":"auction","id":1000,"itemName":"x","description":"y","initialBid":1,"reserve":2,"dateTime":3,"expires":4,"seller":1000,"category":10,"extra":""}"#,
            r#"{"type":"bid","auction":0,"bidder":9223372036854775807,"price":-9223372036854775808,"dateTime":3}"#,
            r#"{"type":"bid","auction":1,"bidder":999999999999999999,"price":-999999999999999999,"dateTime":1000000000000000000}"#,
            // Keys out of the producers' order, from the start and midway.
            r#"{"auction":7,"type":"bid","bidder":1,"price":2,"dateTime":3,"extra":"x"}"#,
            r#"{"type":"bid","auction":7,"price":2,"bidder":1,"dateTime":3,"url":"u","extra":"x","channel":"c"}"#,
            r#"{"type":"auction","id":1,"itemName":"i","description":"d","initialBid":1,"reserve":2,"dateTime":3,"expires":4,"seller":5,"category":6,"extra":"" }"#,
        ];
        for line in lines {
            let event = parse(line.as_bytes(), TextFields::ALL).unwrap_or_else(|| panic!("fast path refused {line}"));
            assert_eq!(event, slow(line), "{line}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_serde_json() {
        let lines = [
            r#"{"type":"bid","auction":1.5,"bidder":1,"price":2,"dateTime":3}"#,
            r#"{"type":"bid","auction":1e3,"bidder":1,"price":2,"dateTime":3}"#,
            r#"{"type":"bid","auction":01,"bidder":1,"price":2,"dateTime":3}"#,
            r#"{"type":"bid","auction":9223372036854775808,"bidder":1,"price":2,"dateTime":3}"#,
            r#"{"type":"bid","auction":-9223372036854775809,"bidder":1,"price":2,"dateTime":3}"#,
            r#"{"type":"bid","auction":00000000000000000001,"bidder":1,"price":2,"dateTime":3}"#,
            r#"{"type":"bid","auction":-0,"bidder":1,"price":2,"dateTime":3}"#,
            "{\"type\":\"bid\",\"auction\":1,\"bidder\":1,\"price\":2,\"dateTime\":3,\"extra\":\"raw\ttab\"}",
            "{\"type\":\"bid\",\"auction\":1,\"bidder\":1,\"price\":2,\"dateTime\":3,\"extra\":\"a\\\"b\u{1}\"}",
            r#"{"type":"bid","auction":123456789012345678901,"bidder":1,"price":2,"dateTime":3}"#,
            r#"{"type":"bid","auction":1234567890123456789.5,"bidder":1,"price":2,"dateTime":3}"#,
            r#"{"type":"bid","auction":1,"auction":2,"bidder":1,"price":2,"dateTime":3}"#,
            r#"{"type":"bid","auction":1,"bidder":1,"price":2,"dateTime":3,"more":[1]}"#,
            r#"{"type":"bid","auction":1,"bidder":1,"price":2,"dateTime":3,"extra":null}"#,
            r#"{"type":"bid","auction":1,"bidder":1,"price":2,"dateTime":3,"extra":"\u00e9"}"#,
            r#"{"type":"bid","auction":1,"bidder":1,"price":2,"dateTime":3} x"#,
            r#"{"type":"bid","auction":1,"bidder":1,"price":2,"dateTime":3"#,
            r#"{"type":"bid","auction":-,"bidder":1,"price":2,"dateTime":3}"#,
            "{not json",
            "",
        ];
        for line in lines {
            assert!(
                parse(line.as_bytes(), TextFields::ALL).is_none(),
                "fast path took {line}"
            );
        }
        // And through the public entry point, each still gets serde_json's answer.
        for line in lines {
            assert_eq!(Event::from_json(line.as_bytes()).is_ok(), slow(line).is_ok(), "{line}");
        }
    }

    #[test]
    fn text_a_query_does_not_read_is_checked_but_left_empty() {
        let person = r#"{"type":"person","id":7,"name":"Ann Lee","emailAddress":"a@b.com","creditCard":"1 2","city":"Bend","state":"OR","dateTime":5,"extra":"xyz"}"#;
        let keep = TextFields::NAME.and(TextFields::STATE);
        match parse(person.as_bytes(), keep) {
            Some(Ok(Event::Person(p))) => {
                assert_eq!((p.id, &*p.name, &*p.state, p.date_time), (7, "Ann Lee", "OR", 5));
                assert_eq!(
                    (&*p.email_address, &*p.credit_card, &*p.city, &*p.extra),
                    ("", "", "", "")
                );
            }
            other => panic!("{other:?}"),
        }
        let bid = r#"{"type":"bid","auction":1,"bidder":2,"price":3,"channel":"c","url":"u","dateTime":4,"extra":"e"}"#;
        match parse(bid.as_bytes(), TextFields::EXTRA) {
            Some(Ok(Event::Bid(b))) => assert_eq!((&*b.channel, &*b.url, &*b.extra), ("", "", "e")),
            other => panic!("{other:?}"),
        }
        // A skipped field is still read as JSON: a broken one is not skipped over.
        let broken = r#"{"type":"bid","auction":1,"bidder":2,"price":3,"url":"u\q","dateTime":4}"#;
        assert!(parse(broken.as_bytes(), TextFields::NONE).is_none());
        assert!(Event::from_json_keeping(broken.as_bytes(), TextFields::NONE).is_err());
    }

    #[test]
    fn raw_control_characters_are_left_to_serde_json_kept_or_skipped() {
        let line = "{\"type\":\"bid\",\"auction\":1,\"bidder\":1,\"price\":2,\"url\":\"a\u{1f}b\",\"dateTime\":3}";
        assert!(
            parse(line.as_bytes(), TextFields::NONE).is_none(),
            "a skipped string is checked too"
        );
        assert!(
            Event::from_json(line.as_bytes()).is_err(),
            "serde_json refuses the line"
        );
    }

    #[test]
    fn control_characters_are_found_anywhere_in_a_word_and_nowhere_else() {
        use super::has_control;
        let text = "abcdefgh ijklmnop é ü ~ \u{7f} 0123456789".as_bytes().to_vec();
        assert!(!has_control(&text));
        for at in 0..text.len() {
            for b in [0u8, 0x09, 0x1f] {
                let mut t = text.clone();
                t[at] = b;
                assert!(has_control(&t), "{b:#x} at {at}");
            }
        }
        assert!(!has_control(&[0x20; 17]) && !has_control(&[0x80; 9]) && !has_control(&[0xff; 8]));
    }
}
