//! The Nexmark events (Person, Auction, Bid) and their JSON form: one object
//! per event with a `"type"` of `"person"`, `"auction"` or `"bid"`, field
//! names as in the Nexmark schema (camelCase), timestamps in epoch
//! milliseconds, prices in cents, every number an integer.

pub use super::json::TextFields;
use serde::{Deserialize, Serialize};

/// A string field of an event or a result row. The generator borrows most
/// of them from fixed tables (cities, channels, URLs, the `extra` padding),
/// so making an event allocates nothing for them; parsed events own theirs.
pub type Text = std::borrow::Cow<'static, str>;

/// A person: a seller or bidder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    /// Person id (from 1000).
    pub id: i64,
    /// Full name.
    pub name: Text,
    /// E-mail address.
    pub email_address: Text,
    /// Credit card number.
    pub credit_card: Text,
    /// City.
    pub city: Text,
    /// US state (two letters).
    pub state: Text,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to the configured average size.
    pub extra: Text,
}

/// An auction of an item by a seller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Auction {
    /// Auction id (from 1000).
    pub id: i64,
    /// Item name.
    pub item_name: Text,
    /// Item description.
    pub description: Text,
    /// Starting price, cents.
    pub initial_bid: i64,
    /// Reserve price, cents.
    pub reserve: i64,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// When the auction closes, ms since the epoch.
    pub expires: i64,
    /// The seller's person id.
    pub seller: i64,
    /// Category (from 10).
    pub category: i64,
    /// Padding to the configured average size.
    pub extra: Text,
}

/// A bid on an auction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bid {
    /// The auction's id.
    pub auction: i64,
    /// The bidder's person id.
    pub bidder: i64,
    /// Price, cents.
    pub price: i64,
    /// Channel the bid came through.
    pub channel: Text,
    /// URL of the bid.
    pub url: Text,
    /// Event time, ms since the epoch.
    pub date_time: i64,
    /// Padding to the configured average size.
    pub extra: Text,
}

/// One Nexmark event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A new person.
    Person(Person),
    /// A new auction.
    Auction(Auction),
    /// A bid.
    Bid(Bid),
}

impl Event {
    /// The event's time (its `dateTime`), ms since the epoch.
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }

    /// Parses one JSON event: a line of the common shape through a parser
    /// for exactly that shape (`nexmark::json`), anything else through
    /// `serde_json` into a flat struct (faster than the tagged-enum derive:
    /// one pass, no buffering of the object).
    ///
    /// # Errors
    /// Invalid JSON, an unknown `type`, or a missing or mistyped field, named.
    pub fn from_json(bytes: &[u8]) -> Result<Event, String> {
        Event::from_json_keeping(bytes, TextFields::ALL)
    }

    /// [`Event::from_json`] for a query that reads only the text fields in
    /// `keep`: the others are checked but left empty (no copy of the
    /// `extra` padding, URLs and descriptions a query never looks at).
    ///
    /// # Errors
    /// As [`Event::from_json`]: the same lines are refused with the same message.
    pub fn from_json_keeping(bytes: &[u8], keep: TextFields) -> Result<Event, String> {
        if let Some(event) = super::json::parse(bytes, keep) {
            return event;
        }
        let raw: RawEvent<'_> =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid Nexmark event JSON: {e}"))?;
        raw.into_event()
    }

    /// The JSON form (the `"type"` tag first, then the fields).
    pub fn to_json(&self) -> String {
        // Serializing plain structs and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Every field of every event type, all optional: what [`Event::from_json`]
/// reads before checking that the fields of the named type are there.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawEvent<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: std::borrow::Cow<'a, str>,
    pub(super) id: Option<i64>,
    pub(super) name: Option<String>,
    pub(super) email_address: Option<String>,
    pub(super) credit_card: Option<String>,
    pub(super) city: Option<String>,
    pub(super) state: Option<String>,
    pub(super) item_name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) initial_bid: Option<i64>,
    pub(super) reserve: Option<i64>,
    pub(super) expires: Option<i64>,
    pub(super) seller: Option<i64>,
    pub(super) category: Option<i64>,
    pub(super) auction: Option<i64>,
    pub(super) bidder: Option<i64>,
    pub(super) price: Option<i64>,
    pub(super) channel: Option<String>,
    pub(super) url: Option<String>,
    pub(super) date_time: Option<i64>,
    pub(super) extra: Option<String>,
}

fn need<T>(value: Option<T>, kind: &str, field: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("Nexmark {kind} event without field `{field}`"))
}

impl RawEvent<'_> {
    #[inline]
    pub(super) fn into_event(self) -> Result<Event, String> {
        Ok(match &*self.kind {
            "bid" => Event::Bid(Bid {
                auction: need(self.auction, "bid", "auction")?,
                bidder: need(self.bidder, "bid", "bidder")?,
                price: need(self.price, "bid", "price")?,
                channel: self.channel.unwrap_or_default().into(),
                url: self.url.unwrap_or_default().into(),
                date_time: need(self.date_time, "bid", "dateTime")?,
                extra: self.extra.unwrap_or_default().into(),
            }),
            "person" => Event::Person(Person {
                id: need(self.id, "person", "id")?,
                name: need(self.name, "person", "name")?.into(),
                email_address: self.email_address.unwrap_or_default().into(),
                credit_card: self.credit_card.unwrap_or_default().into(),
                city: need(self.city, "person", "city")?.into(),
                state: need(self.state, "person", "state")?.into(),
                date_time: need(self.date_time, "person", "dateTime")?,
                extra: self.extra.unwrap_or_default().into(),
            }),
            "auction" => Event::Auction(Auction {
                id: need(self.id, "auction", "id")?,
                item_name: self.item_name.unwrap_or_default().into(),
                description: self.description.unwrap_or_default().into(),
                initial_bid: self.initial_bid.unwrap_or_default(),
                reserve: self.reserve.unwrap_or_default(),
                date_time: need(self.date_time, "auction", "dateTime")?,
                expires: self.expires.unwrap_or_default(),
                seller: need(self.seller, "auction", "seller")?,
                category: need(self.category, "auction", "category")?,
                extra: self.extra.unwrap_or_default().into(),
            }),
            other => {
                return Err(format!(
                    "Nexmark event of unknown type {other:?} (expected \"person\", \"auction\" or \"bid\")"
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json_with_the_type_tag() {
        let bid = Event::Bid(Bid {
            auction: 1001,
            bidder: 1002,
            price: 350,
            channel: "Google".into(),
            url: "https://x".into(),
            date_time: 1_436_918_400_123,
            extra: "xy\"z".into(),
        });
        let json = bid.to_json();
        assert!(json.starts_with(r#"{"type":"bid","auction":1001"#), "{json}");
        assert!(json.contains(r#""dateTime":1436918400123"#), "{json}");
        assert_eq!(Event::from_json(json.as_bytes()).unwrap(), bid);
        let person = r#"{"type":"person","id":1000,"name":"Ann Lee","emailAddress":"a@b.com","creditCard":"1 2","city":"Bend","state":"OR","dateTime":5,"extra":""}"#;
        match Event::from_json(person.as_bytes()).unwrap() {
            Event::Person(p) => assert_eq!((p.id, &*p.state, p.date_time), (1000, "OR", 5)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bad_event_is_an_error_naming_what_is_wrong() {
        let e = Event::from_json(br#"{"type":"bid","auction":1,"price":2,"dateTime":3}"#).unwrap_err();
        assert!(e.contains("bidder"), "{e}");
        let e = Event::from_json(br#"{"type":"sale","id":1}"#).unwrap_err();
        assert!(e.contains("sale"), "{e}");
        let e = Event::from_json(b"{not json").unwrap_err();
        assert!(e.contains("JSON"), "{e}");
        let e = Event::from_json(br#"{"type":"bid","auction":1.5,"bidder":1,"price":2,"dateTime":3}"#).unwrap_err();
        assert!(e.contains("JSON"), "{e}");
    }
}
