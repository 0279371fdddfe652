//! Tensors as the Open Inference Protocol carries them, whatever the transport: an input's
//! name, datatype, shape and elements (listed one by one, or as raw bytes), checked against
//! what a model takes; an output's elements and their raw form.
//!
//! Raw bytes are the flattened, row-major elements with no padding: little-endian numbers,
//! one byte per BOOL, and each BYTES element as a 4-byte little-endian length and then its
//! bytes (what Triton's clients write, `serialize_byte_tensor`).

use super::OipError;

/// The elements of an input tensor, as its request carried them.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    /// BYTES elements one by one (REST `data` strings, gRPC `contents.bytes_contents`).
    Bytes(Vec<Vec<u8>>),
    /// BOOL elements one by one.
    Bools(Vec<bool>),
    /// Numbers one by one: only how many there are matters here (no model of this worker
    /// takes numeric inputs).
    Numbers(usize),
    /// The raw bytes of the whole tensor (gRPC `raw_input_contents`, REST binary data).
    Raw(bytes::Bytes),
    /// No elements were given.
    Missing,
}

/// One input tensor of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// `name`.
    pub name: String,
    /// `datatype`, as sent (`BYTES`, `FP32`, ...).
    pub datatype: String,
    /// `shape`.
    pub shape: Vec<i64>,
    /// The elements.
    pub elements: Elements,
    /// Where the elements are in the request, for errors: `inputs[0].data`,
    /// `raw_input_contents[0]`, ...
    pub source: String,
}

/// An output tensor's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    /// FP32 numbers, row-major.
    Fp32(Vec<f32>),
    /// BYTES elements.
    Bytes(Vec<Vec<u8>>),
}

/// One output tensor of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// `name`.
    pub name: &'static str,
    /// `shape`.
    pub shape: Vec<i64>,
    /// The elements.
    pub data: OutputData,
}

impl Output {
    /// `datatype`.
    pub fn datatype(&self) -> &'static str {
        match self.data {
            OutputData::Fp32(_) => "FP32",
            OutputData::Bytes(_) => "BYTES",
        }
    }

    /// The raw form: little-endian f32s, or length-prefixed BYTES elements.
    pub fn raw(&self) -> Vec<u8> {
        match &self.data {
            OutputData::Fp32(values) => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutputData::Bytes(items) => {
                let size = items.iter().map(|i| 4 + i.len()).sum();
                let mut raw = Vec::with_capacity(size);
                for item in items {
                    raw.extend_from_slice(&(item.len() as u32).to_le_bytes());
                    raw.extend_from_slice(item);
                }
                raw
            }
        }
    }
}

impl Input {
    /// `inputs[at]`, as errors name it.
    fn field(at: usize) -> String {
        format!("inputs[{at}]")
    }

    /// The tensor's elements as BYTES, checked: datatype BYTES, a shape of `[n]` or `[n, 1]`
    /// (or only `[1]`/`[1, 1]` when `one`), as many elements as the shape says.
    pub fn byte_strings(&self, at: usize, one: bool) -> Result<Vec<Vec<u8>>, OipError> {
        let field = Self::field(at);
        self.expect_datatype(&field, "BYTES")?;
        let count = self.rows(&field, one)?;
        let items = match &self.elements {
            Elements::Bytes(items) => items.clone(),
            Elements::Raw(raw) => split_bytes(raw, &self.source)?,
            Elements::Missing => return Err(self.no_data(&field)),
            Elements::Bools(_) | Elements::Numbers(_) => {
                let message = "holds no BYTES elements (bytes_contents for BYTES)";
                return Err(OipError::invalid(&self.source, message));
            }
        };
        self.check_count(items.len(), count)?;
        Ok(items)
    }

    /// The tensor's elements as UTF-8 texts ([`Self::byte_strings`], then decoded).
    pub fn texts(&self, at: usize, one: bool) -> Result<Vec<String>, OipError> {
        let items = self.byte_strings(at, one)?;
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                String::from_utf8(item).map_err(|_| {
                    OipError::invalid(&self.source, format!("element {i} is not UTF-8 text"))
                })
            })
            .collect()
    }

    /// The tensor's one BOOL element.
    pub fn flag(&self, at: usize) -> Result<bool, OipError> {
        let field = Self::field(at);
        self.expect_datatype(&field, "BOOL")?;
        self.rows(&field, true)?;
        let values: Vec<bool> = match &self.elements {
            Elements::Bools(values) => values.clone(),
            Elements::Raw(raw) => raw.iter().map(|b| *b != 0).collect(),
            Elements::Missing => return Err(self.no_data(&field)),
            Elements::Bytes(_) | Elements::Numbers(_) => {
                let message = "holds no BOOL elements (bool_contents for BOOL)";
                return Err(OipError::invalid(&self.source, message));
            }
        };
        self.check_count(values.len(), 1)?;
        Ok(values[0])
    }

    fn expect_datatype(&self, field: &str, want: &str) -> Result<(), OipError> {
        if self.datatype == want {
            return Ok(());
        }
        let message = format!("{:?}; {:?} must be {want}", self.datatype, self.name);
        Err(OipError::invalid(&format!("{field}.datatype"), message))
    }

    /// The element count the shape says: `[n]` or `[n, 1]`, n at least 1 (exactly 1 when
    /// `one`).
    fn rows(&self, field: &str, one: bool) -> Result<usize, OipError> {
        let want = if one { "[1] or [1, 1]" } else { "[n] or [n, 1] with n at least 1" };
        let n = match self.shape.as_slice() {
            [n] | [n, 1] if *n >= 1 && (!one || *n == 1) => *n,
            _ => {
                let message = format!("{:?}; {:?} takes {want}", self.shape, self.name);
                return Err(OipError::invalid(&format!("{field}.shape"), message));
            }
        };
        usize::try_from(n).map_err(|_| OipError::invalid(&format!("{field}.shape"), "too large"))
    }

    fn check_count(&self, got: usize, want: usize) -> Result<(), OipError> {
        if got == want {
            return Ok(());
        }
        let message = format!("{got} elements, but the shape {:?} says {want}", self.shape);
        Err(OipError::invalid(&self.source, message))
    }

    fn no_data(&self, field: &str) -> OipError {
        let message = format!("{:?} has no data", self.name);
        OipError::invalid(field, message)
    }
}

/// BYTES elements from their raw form: each a 4-byte little-endian length, then its bytes.
pub fn split_bytes(raw: &[u8], source: &str) -> Result<Vec<Vec<u8>>, OipError> {
    let mut items = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let i = items.len();
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            let message = format!(
                "element {i} starts with {} bytes, too few for its 4-byte length",
                rest.len()
            );
            return Err(OipError::invalid(source, message));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            let message =
                format!("element {i} says it has {len} bytes, but only {} remain", tail.len());
            return Err(OipError::invalid(source, message));
        }
        items.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Ok(items)
}
