//! The output of one epoch: every serialized record of the sink between two
//! barriers, in one buffer.
//!
//! An exactly-once sink keeps its output until the checkpoint completes. A
//! `Vec` per key and per value cost two allocations per record on the task
//! thread and as many frees on the commit thread; here the bytes of all
//! records go into one growing buffer and each record is a span of it.

use serde::{Deserialize, Serialize};

/// The serialized records of one epoch, in order.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct EpochOutput {
    /// Keys and values back to back: record `i` starts where record `i-1`'s
    /// value ends.
    bytes: Vec<u8>,
    records: Vec<Span>,
}

/// Where one record's key and value end in [`EpochOutput::bytes`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    key_end: usize,
    value_end: usize,
    /// A record without a key differs from one with an empty key.
    has_key: bool,
    partition: Option<i32>,
}

/// One record of an [`EpochOutput`], borrowed. Its field names and order are
/// the stored format of a pending record (see [`EpochOutput`]'s `Serialize`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(super) struct OutRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub partition: Option<i32>,
}

/// An owned pending record, as decoded from a checkpoint.
#[derive(Deserialize)]
struct StoredRecord {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    partition: Option<i32>,
}

impl EpochOutput {
    /// Appends a record.
    pub(super) fn push(&mut self, key: Option<&[u8]>, value: &[u8], partition: Option<i32>) {
        if let Some(key) = key {
            self.bytes.extend_from_slice(key);
        }
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.records.push(Span {
            key_end,
            value_end: self.bytes.len(),
            has_key: key.is_some(),
            partition,
        });
    }

    /// The number of records.
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the epoch has no record.
    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records in the order they were pushed.
    pub(super) fn iter(&self) -> impl Iterator<Item = OutRecord<'_>> + '_ {
        let mut start = 0;
        self.records.iter().map(move |span| {
            let key = span.has_key.then(|| &self.bytes[start..span.key_end]);
            let value = &self.bytes[span.key_end..span.value_end];
            start = span.value_end;
            OutRecord {
                key,
                value,
                partition: span.partition,
            }
        })
    }
}

/// Encoded as a sequence of `{ key: Option<bytes>, value: bytes, partition }`,
/// the format pending records have always had in a checkpoint.
impl Serialize for EpochOutput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for EpochOutput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Restores only: the owned form is fine here.
        let stored = Vec::<StoredRecord>::deserialize(d)?;
        let mut out = EpochOutput::default();
        for r in &stored {
            out.push(r.key.as_deref(), &r.value, r.partition);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order_with_absent_and_empty_keys_apart() {
        let mut epoch = EpochOutput::default();
        epoch.push(None, b"a", None);
        epoch.push(Some(b""), b"", Some(0));
        epoch.push(Some(b"key"), b"value", Some(2));
        let records: Vec<OutRecord<'_>> = epoch.iter().collect();
        assert_eq!(
            records,
            vec![
                OutRecord {
                    key: None,
                    value: b"a",
                    partition: None
                },
                OutRecord {
                    key: Some(b""),
                    value: b"",
                    partition: Some(0)
                },
                OutRecord {
                    key: Some(b"key"),
                    value: b"value",
                    partition: Some(2)
                },
            ]
        );
        assert_eq!(epoch.len(), 3);
    }

    #[test]
    fn the_encoding_is_that_of_owned_records() {
        #[derive(Serialize)]
        struct Owned {
            key: Option<Vec<u8>>,
            value: Vec<u8>,
            partition: Option<i32>,
        }
        let owned = vec![
            Owned {
                key: None,
                value: b"a".to_vec(),
                partition: None,
            },
            Owned {
                key: Some(b"k".to_vec()),
                value: b"bc".to_vec(),
                partition: Some(7),
            },
        ];
        let mut epoch = EpochOutput::default();
        epoch.push(None, b"a", None);
        epoch.push(Some(b"k"), b"bc", Some(7));
        let bytes = postcard::to_stdvec(&epoch).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&owned).unwrap());
        assert_eq!(postcard::from_bytes::<EpochOutput>(&bytes).unwrap(), epoch);
    }
}
