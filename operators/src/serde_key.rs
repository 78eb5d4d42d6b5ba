//! Keys of your own types (structs, enums) through serde: a fixed,
//! documented, order-preserving encoding.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use weir_operators::StateKey;
//!
//! #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
//! struct Account {
//!     region: String,
//!     id: u64,
//! }
//! weir_operators::serde_state_key!(Account);
//!
//! let key = Account { region: "eu".into(), id: 7 };
//! let mut bytes = Vec::new();
//! key.encode_key(&mut bytes);
//! // A struct encodes as the tuple of its fields, in declaration order:
//! let mut tuple = Vec::new();
//! ("eu".to_string(), 7u64).encode_key(&mut tuple);
//! assert_eq!(bytes, tuple);
//! assert_eq!(Account::decode_key(&bytes), Some(key));
//! ```
//!
//! # The encoding (frozen: it decides key groups and stored state)
//! Each value is written as a *component* of a composite key, the same bytes
//! [`StateKey::encode_component`](crate::StateKey::encode_component) writes for the built-in key types, so a
//! struct and the tuple of its fields encode alike and sort alike:
//! - `bool` one byte; integers fixed-width big-endian (as
//!   [`StateKey`](crate::StateKey)'s integers, so a signed integer sorts negative values after
//!   the positive ones); `char` as its `u32`; `f32`/`f64` as their bits with
//!   the sign bit flipped (all bits for negative numbers), so that they sort
//!   as numbers;
//! - strings and byte strings escaped (`0x00` as `0x00 0xFF`) and ended by
//!   `0x00 0x01`;
//! - `Option`: `0x00` for `None`, `0x01` and the value for `Some`;
//! - unit and unit structs: nothing; newtype structs: their field;
//!   structs, tuples and tuple structs: their fields one after another;
//! - enums: the variant's index (`u32` big-endian, declaration order) and
//!   then its fields;
//! - sequences and maps: `0x01` before each element (a map's as key then
//!   value) and `0x00` at the end, so that a prefix sorts first.
//!
//! Renaming a field keeps the encoding; reordering fields or enum
//! variants, or changing a field's type, changes it (and loses restored
//! state), as it would for a tuple. `#[serde(skip)]` fields are not part of
//! the key. Self-describing serde features (`#[serde(flatten)]`, untagged
//! enums) need `deserialize_any`, which a key cannot support: decoding such
//! a key returns `None`.

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use std::fmt;

/// Implements [`StateKey`](crate::StateKey) for types that are serde
/// `Serialize + Deserialize` (and `Clone + Eq + Hash + Send + 'static`), with
/// the encoding described in [the module docs](crate::serde_key).
///
/// A `Serialize` impl that returns an error (no derived one does) makes the
/// task that encodes the key fail.
#[macro_export]
macro_rules! serde_state_key {
    ($($key:ty),+ $(,)?) => {$(
        impl $crate::StateKey for $key {
            fn encode_key(&self, out: &mut ::std::vec::Vec<u8>) {
                $crate::serde_key::encode(self, out);
            }
            fn decode_key(bytes: &[u8]) -> ::std::option::Option<Self> {
                $crate::serde_key::decode(bytes)
            }
            fn encode_component(&self, out: &mut ::std::vec::Vec<u8>) {
                $crate::serde_key::encode(self, out);
            }
            fn decode_component(bytes: &[u8]) -> ::std::option::Option<(Self, usize)> {
                $crate::serde_key::decode_prefix(bytes)
            }
        }
    )+};
}

/// Appends `key`'s encoding to `out`.
///
/// # Panics
/// When `key`'s `Serialize` impl fails (a custom impl's error): a key type
/// that cannot be written is a bug in the type, like a panicking `Hash`.
pub fn encode<K: Serialize + ?Sized>(key: &K, out: &mut Vec<u8>) {
    let at = out.len();
    if let Err(e) = key.serialize(&mut KeySerializer { out }) {
        out.truncate(at);
        panic!("a key of type {} cannot be encoded: {e}", std::any::type_name::<K>());
    }
}

/// Decodes a whole key written by [`encode`]; `None` if malformed.
pub fn decode<K: DeserializeOwned>(bytes: &[u8]) -> Option<K> {
    let (key, used) = decode_prefix(bytes)?;
    (used == bytes.len()).then_some(key)
}

/// Decodes a key written by [`encode`] from the front of `bytes`: the key
/// and the bytes it took; `None` if malformed.
pub fn decode_prefix<K: DeserializeOwned>(bytes: &[u8]) -> Option<(K, usize)> {
    let mut d = KeyDeserializer { input: bytes };
    let key = K::deserialize(&mut d).ok()?;
    Some((key, bytes.len() - d.input.len()))
}

/// Why a key could not be encoded or decoded.
#[derive(Debug)]
pub struct KeyError(String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

impl ser::Error for KeyError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        KeyError(msg.to_string())
    }
}

impl de::Error for KeyError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        KeyError(msg.to_string())
    }
}

fn escaped(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

fn f64_bits(v: f64) -> u64 {
    let bits = v.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn f32_bits(v: f32) -> u32 {
    let bits = v.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | (1 << 31)
    }
}

struct KeySerializer<'a> {
    out: &'a mut Vec<u8>,
}

type Done = Result<(), KeyError>;

macro_rules! ser_be {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> Done {
            self.out.extend_from_slice(&v.to_be_bytes());
            Ok(())
        }
    )*};
}

impl<'a> ser::Serializer for &'a mut KeySerializer<'_> {
    type Ok = ();
    type Error = KeyError;
    type SerializeSeq = Elements<'a>;
    type SerializeTuple = Fields<'a>;
    type SerializeTupleStruct = Fields<'a>;
    type SerializeTupleVariant = Fields<'a>;
    type SerializeMap = Elements<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Fields<'a>;

    ser_be!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64, serialize_i128: i128,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128);

    fn serialize_bool(self, v: bool) -> Done {
        self.out.push(u8::from(v));
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Done {
        self.out.extend_from_slice(&f32_bits(v).to_be_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Done {
        self.out.extend_from_slice(&f64_bits(v).to_be_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Done {
        self.serialize_u32(u32::from(v))
    }
    fn serialize_str(self, v: &str) -> Done {
        escaped(v.as_bytes(), self.out);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Done {
        escaped(v, self.out);
        Ok(())
    }
    fn serialize_none(self) -> Done {
        self.out.push(0);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Done {
        self.out.push(1);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Done {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Done {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Done {
        self.serialize_u32(index)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Done {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Done {
        self.out.extend_from_slice(&index.to_be_bytes());
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Elements<'a>, KeyError> {
        Ok(Elements { out: self.out })
    }
    fn serialize_tuple(self, _: usize) -> Result<Fields<'a>, KeyError> {
        Ok(Fields { out: self.out })
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Fields<'a>, KeyError> {
        Ok(Fields { out: self.out })
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields<'a>, KeyError> {
        self.out.extend_from_slice(&index.to_be_bytes());
        Ok(Fields { out: self.out })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Elements<'a>, KeyError> {
        Ok(Elements { out: self.out })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields<'a>, KeyError> {
        Ok(Fields { out: self.out })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Fields<'a>, KeyError> {
        self.out.extend_from_slice(&index.to_be_bytes());
        Ok(Fields { out: self.out })
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Fields of a struct, tuple or variant: one after another.
#[doc(hidden)]
pub struct Fields<'a> {
    out: &'a mut Vec<u8>,
}

impl Fields<'_> {
    fn field<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(&mut KeySerializer { out: self.out })
    }
}

impl ser::SerializeTuple for Fields<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.field(value)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Fields<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.field(value)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Fields<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.field(value)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Done {
        self.field(value)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Fields<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Done {
        self.field(value)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

/// Elements of a sequence or map: `0x01` before each, `0x00` at the end.
#[doc(hidden)]
pub struct Elements<'a> {
    out: &'a mut Vec<u8>,
}

impl ser::SerializeSeq for Elements<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.out.push(1);
        value.serialize(&mut KeySerializer { out: self.out })
    }
    fn end(self) -> Done {
        self.out.push(0);
        Ok(())
    }
}

impl ser::SerializeMap for Elements<'_> {
    type Ok = ();
    type Error = KeyError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Done {
        self.out.push(1);
        key.serialize(&mut KeySerializer { out: self.out })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(&mut KeySerializer { out: self.out })
    }
    fn end(self) -> Done {
        self.out.push(0);
        Ok(())
    }
}

struct KeyDeserializer<'de> {
    input: &'de [u8],
}

fn malformed<T>() -> Result<T, KeyError> {
    Err(KeyError("a malformed key".into()))
}

impl<'de> KeyDeserializer<'de> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], KeyError> {
        let Some((head, rest)) = self.input.split_first_chunk::<N>() else {
            return malformed();
        };
        self.input = rest;
        Ok(*head)
    }

    fn escaped(&mut self) -> Result<Vec<u8>, KeyError> {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            match self.input.get(i) {
                None => return malformed(),
                Some(0) => match self.input.get(i + 1) {
                    Some(0xFF) => {
                        out.push(0);
                        i += 2;
                    }
                    Some(1) => {
                        self.input = &self.input[i + 2..];
                        return Ok(out);
                    }
                    _ => return malformed(),
                },
                Some(&b) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
    }

    /// The marker before a sequence element: whether one follows.
    fn more(&mut self) -> Result<bool, KeyError> {
        match self.take::<1>()? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => malformed(),
        }
    }
}

macro_rules! de_be {
    ($($f:ident: $t:ty => $visit:ident),*) => {$(
        fn $f<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
            visitor.$visit(<$t>::from_be_bytes(self.take()?))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut KeyDeserializer<'de> {
    type Error = KeyError;

    de_be!(deserialize_i8: i8 => visit_i8, deserialize_i16: i16 => visit_i16, deserialize_i32: i32 => visit_i32,
        deserialize_i64: i64 => visit_i64, deserialize_i128: i128 => visit_i128, deserialize_u8: u8 => visit_u8,
        deserialize_u16: u16 => visit_u16, deserialize_u32: u32 => visit_u32, deserialize_u64: u64 => visit_u64,
        deserialize_u128: u128 => visit_u128);

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, KeyError> {
        Err(KeyError(
            "a key's encoding does not describe itself: untagged enums and flattened fields cannot be keys".into(),
        ))
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.take::<1>()? {
            [0] => visitor.visit_bool(false),
            [1] => visitor.visit_bool(true),
            _ => malformed(),
        }
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        let bits = u32::from_be_bytes(self.take()?);
        let bits = if bits >> 31 == 1 { bits & !(1 << 31) } else { !bits };
        visitor.visit_f32(f32::from_bits(bits))
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        let bits = u64::from_be_bytes(self.take()?);
        let bits = if bits >> 63 == 1 { bits & !(1 << 63) } else { !bits };
        visitor.visit_f64(f64::from_bits(bits))
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match char::from_u32(u32::from_be_bytes(self.take()?)) {
            Some(c) => visitor.visit_char(c),
            None => malformed(),
        }
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        self.deserialize_string(visitor)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match String::from_utf8(self.escaped()?) {
            Ok(s) => visitor.visit_string(s),
            Err(_) => malformed(),
        }
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        self.deserialize_byte_buf(visitor)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        visitor.visit_byte_buf(self.escaped()?)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        match self.take::<1>()? {
            [0] => visitor.visit_none(),
            [1] => visitor.visit_some(self),
            _ => malformed(),
        }
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, KeyError> {
        visitor.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, KeyError> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        visitor.visit_seq(Marked { de: self })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, KeyError> {
        visitor.visit_seq(Counted { de: self, left: len })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        self.deserialize_tuple(len, visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        visitor.visit_map(Marked { de: self })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        self.deserialize_tuple(fields.len(), visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        visitor.visit_enum(self)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        self.deserialize_u32(visitor)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        self.deserialize_any(visitor)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// A struct's or tuple's fields: as many as it has.
struct Counted<'a, 'de> {
    de: &'a mut KeyDeserializer<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Counted<'_, 'de> {
    type Error = KeyError;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, KeyError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// A sequence's or map's elements: each after a `0x01`, ended by `0x00`.
struct Marked<'a, 'de> {
    de: &'a mut KeyDeserializer<'de>,
}

impl<'de> de::SeqAccess<'de> for Marked<'_, 'de> {
    type Error = KeyError;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, KeyError> {
        if !self.de.more()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
}

impl<'de> de::MapAccess<'de> for Marked<'_, 'de> {
    type Error = KeyError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, KeyError> {
        if !self.de.more()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, KeyError> {
        seed.deserialize(&mut *self.de)
    }
}

impl<'de> de::EnumAccess<'de> for &mut KeyDeserializer<'de> {
    type Error = KeyError;
    type Variant = Self;
    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), KeyError> {
        let index = u32::from_be_bytes(self.take()?);
        let value = seed.deserialize(IntoDeserializer::<KeyError>::into_deserializer(index))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut KeyDeserializer<'de> {
    type Error = KeyError;
    fn unit_variant(self) -> Result<(), KeyError> {
        Ok(())
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, KeyError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, KeyError> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        de::Deserializer::deserialize_tuple(self, fields.len(), visitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::{key_group_of, StateKey};
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    struct Account {
        region: String,
        id: u64,
        flag: bool,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    enum Side {
        Buy,
        Sell { venue: String },
        Other(Option<u32>, char),
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    struct Nested {
        account: Account,
        side: Side,
        tags: Vec<String>,
        bytes: (u8, i16),
    }

    crate::serde_state_key!(Account, Side, Nested);

    fn encoded<K: StateKey>(k: &K) -> Vec<u8> {
        let mut out = Vec::new();
        k.encode_key(&mut out);
        out
    }

    #[test]
    fn a_struct_encodes_as_the_tuple_of_its_fields() {
        let account = Account {
            region: "e\0u".into(),
            id: 42,
            flag: true,
        };
        assert_eq!(encoded(&account), encoded(&("e\0u".to_string(), 42u64, true)));
        assert_eq!(Account::decode_key(&encoded(&account)), Some(account.clone()));
        // Inside a tuple it is a component like any other.
        let pair = (account.clone(), 7u32);
        assert_eq!(<(Account, u32)>::decode_key(&encoded(&pair)), Some(pair));
    }

    #[test]
    fn enums_nested_structs_and_sequences_round_trip() {
        let keys = [
            Nested {
                account: Account {
                    region: String::new(),
                    id: 0,
                    flag: false,
                },
                side: Side::Buy,
                tags: vec![],
                bytes: (0, -1),
            },
            Nested {
                account: Account {
                    region: "x".into(),
                    id: u64::MAX,
                    flag: true,
                },
                side: Side::Sell { venue: "\0".into() },
                tags: vec!["a".into(), String::new()],
                bytes: (255, i16::MIN),
            },
            Nested {
                account: Account {
                    region: "y".into(),
                    id: 1,
                    flag: false,
                },
                side: Side::Other(Some(3), 'z'),
                tags: vec!["b".into()],
                bytes: (1, 1),
            },
        ];
        for key in keys {
            let bytes = encoded(&key);
            assert_eq!(Nested::decode_key(&bytes), Some(key.clone()), "{key:?}");
            assert_eq!(Nested::decode_key(&bytes[..bytes.len() - 1]), None, "truncated");
        }
    }

    #[test]
    fn keys_sort_as_the_types_do() {
        let mut accounts = vec![
            Account {
                region: "b".into(),
                id: 1,
                flag: false,
            },
            Account {
                region: "a".into(),
                id: 2,
                flag: true,
            },
            Account {
                region: "a\0".into(),
                id: 0,
                flag: false,
            },
            Account {
                region: "a".into(),
                id: 2,
                flag: false,
            },
            Account {
                region: "ab".into(),
                id: 0,
                flag: false,
            },
        ];
        let mut by_bytes = accounts.clone();
        by_bytes.sort_by_key(encoded);
        accounts.sort();
        assert_eq!(by_bytes, accounts);
        let mut sides = vec![
            Side::Other(None, 'a'),
            Side::Sell { venue: "x".into() },
            Side::Buy,
            Side::Other(Some(0), 'a'),
        ];
        let mut by_bytes = sides.clone();
        by_bytes.sort_by_key(encoded);
        sides.sort();
        assert_eq!(by_bytes, sides);
    }

    #[test]
    fn floats_sort_as_numbers() {
        let values = [f64::NEG_INFINITY, -2.5, -0.0, 0.0, 1e-300, 3.0, f64::INFINITY];
        let mut bytes: Vec<Vec<u8>> = Vec::new();
        for v in values {
            let mut out = Vec::new();
            super::encode(&v, &mut out);
            assert_eq!(super::decode::<f64>(&out).map(f64::to_bits), Some(v.to_bits()));
            bytes.push(out);
        }
        assert!(bytes.windows(2).all(|w| w[0] < w[1]), "{bytes:?}");
    }

    #[test]
    fn serde_key_groups_are_frozen() {
        // A golden test: these key groups are part of the checkpoint format.
        let groups = [
            key_group_of(
                &encoded(&Account {
                    region: "eu".into(),
                    id: 7,
                    flag: true,
                }),
                128,
            )
            .0,
            key_group_of(&encoded(&Side::Sell { venue: "x".into() }), 128).0,
            key_group_of(&encoded(&Side::Buy), 128).0,
        ];
        assert_eq!(groups, GOLDEN_GROUPS);
        assert_eq!(encoded(&Side::Buy), [0, 0, 0, 0]);
        assert_eq!(encoded(&Side::Other(None, 'a')), [0, 0, 0, 2, 0, 0, 0, 0, 97]);
        let mut seq = Vec::new();
        super::encode(&vec![1u8, 2], &mut seq);
        assert_eq!(seq, [1, 1, 1, 2, 0]);
    }

    const GOLDEN_GROUPS: [u16; 3] = [93, 66, 7];
}
