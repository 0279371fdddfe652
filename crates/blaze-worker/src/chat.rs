//! Chat templates, rendered with minijinja the way Hugging Face's `apply_chat_template` does.

use minijinja::{Environment, context};
use serde::Serialize;

use crate::Result;

/// A chat message as the template sees it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A compiled chat template with the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// Used when a model ships no template: ChatML, which most instruction-tuned models know.
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

impl ChatTemplate {
    /// Compiles `source` (or ChatML when `None`).
    pub fn new(source: Option<String>, bos_token: String, eos_token: String) -> Result<Self> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib_like_methods);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.unwrap_or_else(|| CHATML.to_string()))?;
        Ok(Self { env, bos_token, eos_token })
    }

    /// Renders the prompt for `messages`, ending with the assistant's turn opener.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        let template = self.env.get_template("chat")?;
        Ok(template.render(context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })?)
    }
}

/// Python string methods that Hugging Face templates call (`strip`, `startswith`, ...).
fn minijinja_contrib_like_methods(
    _state: &minijinja::State,
    value: &minijinja::Value,
    method: &str,
    args: &[minijinja::Value],
) -> Result<minijinja::Value, minijinja::Error> {
    let text = value.as_str().ok_or_else(|| {
        minijinja::Error::new(minijinja::ErrorKind::UnknownMethod, format!("no method {method}"))
    })?;
    let arg = |i: usize| args.get(i).and_then(|a| a.as_str()).unwrap_or_default();
    Ok(match method {
        "strip" => text.trim().into(),
        "lstrip" => text.trim_start().into(),
        "rstrip" => text.trim_end().into(),
        "upper" => text.to_uppercase().into(),
        "lower" => text.to_lowercase().into(),
        "startswith" => text.starts_with(arg(0)).into(),
        "endswith" => text.ends_with(arg(0)).into(),
        "split" => text.split(arg(0)).map(minijinja::Value::from).collect::<Vec<_>>().into(),
        _ => {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::UnknownMethod,
                format!("no method {method}"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_renders_roles_and_generation_prompt() {
        let t = ChatTemplate::new(None, String::new(), String::new()).unwrap();
        let out = t.render(&[Message { role: "user".into(), content: "Hi".into() }]).unwrap();
        assert_eq!(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn python_string_methods_work_in_templates() {
        let src = "{% for m in messages %}{{ m.content.strip() }}{% endfor %}".to_string();
        let t = ChatTemplate::new(Some(src), String::new(), String::new()).unwrap();
        let out = t.render(&[Message { role: "user".into(), content: "  x ".into() }]).unwrap();
        assert_eq!(out, "x");
    }
}
