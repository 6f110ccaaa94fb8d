//! JSON parsing that refuses an object with the same key twice. serde_json
//! keeps the last value silently; for a stored document that would let a
//! second `auth_token` hide behind the first one a reader sees.

use std::{cell::RefCell, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why [`parse`] refused the input.
pub(super) enum Refused {
    /// Not JSON: the position only (serde_json's message may quote input).
    Syntax { line: usize, column: usize },
    /// A key given twice: its dotted path (keys are field names, never
    /// values).
    Duplicate(String),
}

/// `bytes` as a JSON value, refusing duplicate keys at any depth.
pub(super) fn parse(bytes: &[u8]) -> Result<Value, Refused> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Seed {
        path: String::new(),
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    value.map_err(|e| match duplicate.into_inner() {
        Some(path) => Refused::Duplicate(path),
        None => Refused::Syntax {
            line: e.line(),
            column: e.column(),
        },
    })
}

struct Seed<'a> {
    /// The dotted path of the value being read, with a trailing `.`.
    path: String,
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        let mut i = 0;
        while let Some(v) = seq.next_element_seed(Seed {
            path: format!("{}{i}.", self.path),
            duplicate: self.duplicate,
        })? {
            items.push(v);
            i += 1;
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(format!("{}{key}", self.path));
                return Err(de::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(Seed {
                path: format!("{}{key}.", self.path),
                duplicate: self.duplicate,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        let dup = |s: &str| match parse(s.as_bytes()) {
            Err(Refused::Duplicate(path)) => path,
            Err(Refused::Syntax { .. }) => panic!("{s}: a syntax error"),
            Ok(v) => panic!("{s}: accepted as {v}"),
        };
        assert_eq!(
            dup(r#"{"auth_token": "a", "auth_token": "b"}"#),
            "auth_token"
        );
        assert_eq!(dup(r#"{"previous": {"x": 1, "x": 2}}"#), "previous.x");
        assert_eq!(dup(r#"{"a": [{"k": 1, "k": 1}]}"#), "a.0.k");
        let v = parse(br#"{"a": [1, 2.5, true, null, "s"], "b": {"c": -1}}"#)
            .ok()
            .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": [1, 2.5, true, null, "s"], "b": {"c": -1}})
        );
        assert!(matches!(
            parse(b"{\"a\": 1} trailing"),
            Err(Refused::Syntax { line: 1, .. })
        ));
    }
}
