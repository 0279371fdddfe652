//! The key `prefixAware` places a request by: the beginning of its prompt that other requests
//! are likely to share, which is what a worker's prefix cache can reuse.
//!
//! - A chat (`messages`): its leading `system` and `developer` messages, role and content, so
//!   conversations that share a system prompt meet on one worker whatever their user turns say;
//!   without such messages, the first message.
//! - A completion (`prompt`): the first prompt (a string, or token ids as decimal text).
//! - An Open Inference Protocol request (`inputs`): the first element of its `text_input`
//!   tensor's `data`, the prompt as Triton's LLM backends name it; so a generate request keys
//!   as a completion of the same prompt. Its model is in the path, not the body: requests to
//!   two models with one prompt share a key.
//! - Either way, at most `max` bytes of it, after the model name: two models sharing a system
//!   prompt share no cache.
//! - Any other body (not JSON, or neither field): its first `max` bytes.
//!
//! The body is read with serde visitors that keep only what the key needs: strings are
//! borrowed from the body where they have no escapes, messages past those the key takes are
//! skipped without being read into strings, and token ids are written straight into the key.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The bytes `prefixAware` hashes for `body`: the model name and at most `max` bytes of the
/// prompt's shared beginning, or the body's first `max` bytes when it is not understood.
pub fn prefix_key(body: &[u8], max: usize) -> Vec<u8> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let key = Body { max }.deserialize(&mut de).and_then(|key| de.end().map(|()| key));
    match key {
        Ok(Some(key)) => key,
        _ => body[..body.len().min(max)].to_vec(),
    }
}

/// Appends as much of `bytes` as fits under `max`.
fn extend_capped(key: &mut Vec<u8>, bytes: &[u8], max: usize) {
    let room = max.saturating_sub(key.len());
    key.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// The request body: the model and the prompt's key, or `None` without a prompt.
struct Body {
    max: usize,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Model,
    Messages,
    Prompt,
    Inputs,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Model<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'de> DeserializeSeed<'de> for Body {
    type Value = Option<Vec<u8>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Body {
    type Value = Option<Vec<u8>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a completion or chat request")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut model, mut prompt) = (None, None);
        while let Some(field) = map.next_key()? {
            match field {
                Field::Model => model = Some(map.next_value::<Model<'de>>()?),
                Field::Messages => prompt = map.next_value_seed(Chat { max: self.max })?,
                Field::Prompt => prompt = map.next_value_seed(Completion { max: self.max })?,
                Field::Inputs => prompt = map.next_value_seed(Inputs { max: self.max })?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(prompt.map(|prompt| {
            let model = model.as_ref().map_or(&b""[..], |m| m.0.as_bytes());
            [model, b"\0", &prompt].concat()
        }))
    }
}

/// A chat's `messages`: the key of its leading system run, or of its first message.
struct Chat {
    max: usize,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(default, borrow)]
    content: Content<'a>,
}

impl Message<'_> {
    /// Whether the message belongs to the instructions a chat starts with.
    fn leads(&self) -> bool {
        matches!(&*self.role, "system" | "developer")
    }
}

impl<'de> DeserializeSeed<'de> for Chat {
    type Value = Option<Vec<u8>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Chat {
    type Value = Option<Vec<u8>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut key = Vec::new();
        let mut any = false;
        while let Some(m) = seq.next_element::<Message<'de>>()? {
            let leads = m.leads();
            if leads || !any {
                for part in [m.role.as_bytes(), b"\0", m.content.0.as_bytes(), b"\0"] {
                    extend_capped(&mut key, part, self.max);
                }
            }
            any = true;
            if !leads {
                break;
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(any.then_some(key))
    }
}

/// A message's content: a string, or OpenAI's content parts with their text joined (as the
/// worker joins them); nothing when `null` or absent.
#[derive(Default)]
struct Content<'a>(Cow<'a, str>);

#[derive(Deserialize)]
struct Part<'a> {
    /// Absent in parts that are not text.
    #[serde(default, borrow)]
    text: Cow<'a, str>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor(std::marker::PhantomData))
    }
}

struct ContentVisitor<'a>(std::marker::PhantomData<Content<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
    type Value = Content<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, content parts or null")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Content(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Content(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Content(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Content::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut text = Cow::Borrowed("");
        while let Some(part) = seq.next_element::<Part<'a>>()? {
            if text.is_empty() {
                text = part.text;
            } else {
                text.to_mut().push_str(&part.text);
            }
        }
        Ok(Content(text))
    }
}

/// A completion's `prompt`: the key of its first prompt.
struct Completion {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for Completion {
    type Value = Option<Vec<u8>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Completion {
    type Value = Option<Vec<u8>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a prompt: a string, token ids, or an array of either")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.as_bytes()[..v.len().min(self.max)].to_vec()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let key = match seq.next_element_seed(FirstSeed { max: self.max })? {
            None => None,
            Some(First::Prompt(key)) => Some(key),
            // A single prompt of token ids: the rest of the array is the rest of it.
            Some(First::Token(t)) => {
                let mut key = Vec::new();
                push_token(&mut key, t, self.max);
                while let Some(t) = seq.next_element::<u64>()? {
                    push_token(&mut key, t, self.max);
                }
                Some(key)
            }
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(key)
    }
}

/// The first element of a `prompt` array: a whole prompt (a string, or an array of token ids)
/// of a batch, or the first token id of a single prompt.
enum First {
    Prompt(Vec<u8>),
    Token(u64),
}

/// Reads a [`First`], keeping at most `max` bytes of a prompt.
struct FirstSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for FirstSeed {
    type Value = First;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstSeed {
    type Value = First;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a token id or an array of token ids")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(First::Prompt(v.as_bytes()[..v.len().min(self.max)].to_vec()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(First::Token(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut key = Vec::new();
        while let Some(t) = seq.next_element::<u64>()? {
            push_token(&mut key, t, self.max);
        }
        Ok(First::Prompt(key))
    }
}

/// An Open Inference Protocol request's `inputs`: the key of its `text_input` tensor.
struct Inputs {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for Inputs {
    type Value = Option<Vec<u8>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Inputs {
    type Value = Option<Vec<u8>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of input tensors")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut key = None;
        while let Some(tensor) = seq.next_element_seed(Tensor { max: self.max })? {
            if key.is_none() {
                key = tensor;
            }
        }
        Ok(key)
    }
}

/// One input tensor: the key of its first element when it is `text_input`.
struct Tensor {
    max: usize,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum TensorField {
    Name,
    Data,
    #[serde(other)]
    Other,
}

impl<'de> DeserializeSeed<'de> for Tensor {
    type Value = Option<Vec<u8>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Tensor {
    type Value = Option<Vec<u8>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input tensor")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // `data` may come before `name`: its first element is kept until the name is known.
        let (mut prompt, mut name) = (None, None);
        while let Some(field) = map.next_key()? {
            match field {
                TensorField::Name => name = Some(map.next_value::<Model<'de>>()?),
                TensorField::Data => prompt = map.next_value_seed(FirstText { max: self.max })?,
                TensorField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(prompt.filter(|_| name.is_some_and(|n| n.0 == "text_input")))
    }
}

/// The first string of a tensor's `data` (nested arrays are row-major), at most `max` bytes.
struct FirstText {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for FirstText {
    type Value = Option<Vec<u8>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstText {
    type Value = Option<Vec<u8>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.as_bytes()[..v.len().min(self.max)].to_vec()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element_seed(FirstText { max: self.max })?.flatten();
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(first)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Appends token id `t` as decimal text, separated by a space, while the key is under `max`.
fn push_token(key: &mut Vec<u8>, t: u64, max: usize) {
    if key.len() >= max {
        return;
    }
    if !key.is_empty() {
        key.push(b' ');
    }
    let _ = write!(key, "{t}");
    key.truncate(max);
}

#[cfg(test)]
mod tests;
