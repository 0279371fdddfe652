//! Parsing a `/v1/images/generations` body: OpenAI's fields (`prompt`, `model`, `n`, `size`,
//! `response_format`, `user`) and Blaze's (`steps`, `guidance_scale`, `seed`,
//! `negative_prompt`, `stream`). A field OpenAI has that this worker cannot honour (`url`
//! answers, `quality`, `style`, ...) is refused by name rather than ignored.

use serde_json::Value;

use super::{ApiError, flag, object, uint};

/// A parsed request; what it leaves out takes the engine's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagesRequest {
    /// `model`, if given.
    pub model: Option<String>,
    /// `prompt`.
    pub prompt: String,
    /// `negative_prompt` (empty: none).
    pub negative_prompt: String,
    /// `n` (default 1).
    pub n: usize,
    /// `size` as width and height.
    pub size: Option<(usize, usize)>,
    /// `steps`.
    pub steps: Option<usize>,
    /// `guidance_scale`.
    pub guidance_scale: Option<f64>,
    /// `seed` of the first image (the next ones take the following seeds).
    pub seed: Option<u64>,
    /// `stream`: progress events, then the images, as server-sent events.
    pub stream: bool,
}

/// Fields OpenAI's image API has that change what it makes in ways this worker does not.
const UNSUPPORTED: &[&str] = &[
    "quality",
    "style",
    "background",
    "moderation",
    "output_format",
    "output_compression",
    "partial_images",
    "image",
    "mask",
];

/// Parses a `/v1/images/generations` body.
pub fn parse_images(body: &[u8]) -> Result<ImagesRequest, ApiError> {
    let obj = object(body)?;
    let string = |field: &str| -> Result<Option<String>, ApiError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(field, "must be a string")),
        }
    };
    if let Some(field) = UNSUPPORTED.iter().find(|f| obj.get(**f).is_some_and(|v| !v.is_null())) {
        return Err(ApiError::invalid(field, "is not supported by this image model"));
    }
    let prompt = string("prompt")?.ok_or_else(|| ApiError::invalid("prompt", "is required"))?;
    if prompt.trim().is_empty() {
        return Err(ApiError::invalid("prompt", "must not be empty"));
    }
    match string("response_format")?.as_deref() {
        None | Some("b64_json") => {}
        Some("url") => {
            return Err(ApiError::invalid(
                "response_format",
                "\"url\" is not supported: this worker returns images inline; use \"b64_json\"",
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "response_format",
                format!("{other:?}: use \"b64_json\""),
            ));
        }
    }
    let n = uint(&obj, "n")?.unwrap_or(1);
    if n == 0 {
        return Err(ApiError::invalid("n", "must be at least 1"));
    }
    let size = match string("size")?.as_deref() {
        None | Some("auto") => None,
        Some(s) => Some(parse_size(s)?),
    };
    let steps = uint(&obj, "steps")?;
    if steps == Some(0) {
        return Err(ApiError::invalid("steps", "must be at least 1"));
    }
    let guidance_scale = match obj.get("guidance_scale") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(g) if (0.0..=50.0).contains(&g) => Some(g),
            _ => return Err(ApiError::invalid("guidance_scale", "must be a number from 0 to 50")),
        },
    };
    let seed = match obj.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| ApiError::invalid("seed", "must be a non-negative integer"))?,
        ),
    };
    let stream = flag(&obj, "stream")?;
    string("user")?;
    Ok(ImagesRequest {
        model: string("model")?,
        prompt,
        negative_prompt: string("negative_prompt")?.unwrap_or_default(),
        n,
        size,
        steps,
        guidance_scale,
        seed,
        stream,
    })
}

/// `WIDTHxHEIGHT`.
fn parse_size(s: &str) -> Result<(usize, usize), ApiError> {
    let bad =
        || ApiError::invalid("size", format!("{s:?}: write it as WIDTHxHEIGHT, e.g. \"512x512\""));
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    Ok((w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(body: &str) -> ApiError {
        parse_images(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_full_request_parses() {
        let r = parse_images(
            br#"{"prompt": "a fox", "model": "tiny", "n": 2, "size": "768x512",
                 "response_format": "b64_json", "steps": 4, "guidance_scale": 0,
                 "seed": 7, "negative_prompt": "blur", "stream": true, "user": "u1"}"#,
        )
        .unwrap();
        assert_eq!(r.size, Some((768, 512)));
        assert_eq!((r.n, r.steps, r.guidance_scale, r.seed), (2, Some(4), Some(0.0), Some(7)));
        assert_eq!(r.negative_prompt, "blur");
        assert!(r.stream);
        let r = parse_images(br#"{"prompt": "a fox", "size": "auto"}"#).unwrap();
        assert_eq!((r.n, r.size, r.steps, r.stream), (1, None, None, false));
    }

    #[test]
    fn each_bad_field_is_named() {
        for (body, field) in [
            (r#"{}"#, "prompt"),
            (r#"{"prompt": " "}"#, "prompt"),
            (r#"{"prompt": 3}"#, "prompt"),
            (r#"{"prompt": "a", "n": 0}"#, "n"),
            (r#"{"prompt": "a", "n": -1}"#, "n"),
            (r#"{"prompt": "a", "size": "big"}"#, "size"),
            (r#"{"prompt": "a", "size": "512x"}"#, "size"),
            (r#"{"prompt": "a", "steps": 0}"#, "steps"),
            (r#"{"prompt": "a", "guidance_scale": 51}"#, "guidance_scale"),
            (r#"{"prompt": "a", "seed": -3}"#, "seed"),
            (r#"{"prompt": "a", "response_format": "url"}"#, "response_format"),
            (r#"{"prompt": "a", "quality": "hd"}"#, "quality"),
            (r#"{"prompt": "a", "stream": "yes"}"#, "stream"),
        ] {
            let e = error(body);
            assert_eq!(e.param.as_deref(), Some(field), "{body}: {e:?}");
            assert!(e.message.starts_with(field), "{body}: {}", e.message);
        }
    }
}
