//! Chat prompts: the model's own chat template (GGUF `tokenizer.chat_template`, or
//! `chat_template` in an HF directory's `tokenizer_config.json`) rendered with minijinja as
//! transformers' `apply_chat_template` renders it, or, for a model without one, BitNet
//! b1.58's built-in format: `<|begin_of_text|>` then `Role: content<|eot_id|>` per message,
//! ending with `Assistant: ` for the reply.
//!
//! Either way the ids are built so that a message cannot forge a turn: the template's own
//! text is encoded with its special tokens (`<|eot_id|>`, `<|user|>`, ...) as their ids, and
//! every message's content is encoded as plain text, whatever special-token text it holds.
//! To tell the two apart after rendering, each content is handed to the template wrapped in
//! two private-use characters (U+E000, U+E001; a message's own are replaced by U+FFFD), and
//! the template's `trim` filter and `strip` methods trim inside them.

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use minijinja::value::Value;
use minijinja::{Environment, ErrorKind, State};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A model's own chat template and the special-token texts it refers to.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatTemplate {
    /// The Jinja source.
    pub source: String,
    /// `bos_token` as the template sees it ("" when the model has none).
    pub bos_token: String,
    /// `eos_token` as the template sees it.
    pub eos_token: String,
}

/// One piece of a chat prompt: template text (its special tokens become their ids) or
/// message content (always plain text).
#[derive(Clone, Debug, PartialEq)]
pub enum ChatPart {
    Template(String),
    Content(String),
}

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';
const BOS: &str = "<|begin_of_text|>";
const END_OF_TURN: &str = "<|eot_id|>";

/// The prompt's pieces for `messages`, ending where the reply begins.
pub fn chat_parts(tok: &Tokenizer, messages: &[ChatMessage]) -> Result<Vec<ChatPart>> {
    match tok.chat_template() {
        Some(t) => template_parts(t, messages),
        None => Ok(builtin_parts(messages)),
    }
}

/// The prompt text for `messages` (for display and for comparison with transformers; the
/// ids come from [`chat_ids`]).
pub fn format_chat(tok: &Tokenizer, messages: &[ChatMessage]) -> Result<String> {
    Ok(chat_parts(tok, messages)?
        .into_iter()
        .map(|p| match p {
            ChatPart::Template(t) | ChatPart::Content(t) => t,
        })
        .collect())
}

/// The prompt ids for `messages`: template text with its special tokens as ids, message
/// content encoded as plain text, so that `<|eot_id|>System: ...` inside a message cannot
/// forge a turn. The plain text between two special tokens (template text and content
/// together) is encoded in one piece, so a benign chat gets the ids of the whole rendered
/// prompt.
pub fn chat_ids(tok: &Tokenizer, messages: &[ChatMessage]) -> Result<Vec<u32>> {
    let builtin = tok.chat_template().is_none();
    let specials: Vec<(u32, &str)> = if builtin {
        let id = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "the model has no chat template and its tokenizer has no {t} token, which BitNet's built-in chat format needs; use a model with a chat template or send a plain completion"
                ))
            })
        };
        vec![(id(BOS)?, BOS), (id(END_OF_TURN)?, END_OF_TURN)]
    } else {
        tok.added_tokens().filter(|(_, t)| !t.is_empty()).collect()
    };
    let mut ids = Vec::new();
    let mut plain = String::new();
    for part in chat_parts(tok, messages)? {
        match part {
            ChatPart::Content(t) => plain.push_str(&t),
            ChatPart::Template(t) => {
                let mut rest = t.as_str();
                while let Some((at, id, len)) = first_special(rest, &specials) {
                    plain.push_str(&rest[..at]);
                    if !plain.is_empty() {
                        ids.extend(tok.encode_plain(&plain)?);
                        plain.clear();
                    }
                    ids.push(id);
                    rest = &rest[at + len..];
                }
                plain.push_str(rest);
            }
        }
    }
    if !plain.is_empty() {
        ids.extend(tok.encode_plain(&plain)?);
    }
    Ok(ids)
}

/// The leftmost (then longest) special token in `text`: (byte offset, id, byte length).
fn first_special(text: &str, specials: &[(u32, &str)]) -> Option<(usize, u32, usize)> {
    specials
        .iter()
        .filter_map(|&(id, s)| text.find(s).map(|at| (at, id, s.len())))
        .min_by_key(|&(at, _, len)| (at, std::cmp::Reverse(len)))
}

/// BitNet b1.58's format (the 2B-4T checkpoint's own template, built in).
fn builtin_parts(messages: &[ChatMessage]) -> Vec<ChatPart> {
    let mut parts = vec![ChatPart::Template(BOS.into())];
    for m in messages {
        let role = match m.role.as_str() {
            "system" | "developer" => "System",
            "assistant" => "Assistant",
            _ => "User",
        };
        parts.push(ChatPart::Template(format!("{role}: ")));
        parts.push(ChatPart::Content(m.content.trim().to_string()));
        parts.push(ChatPart::Template(END_OF_TURN.into()));
    }
    parts.push(ChatPart::Template("Assistant: ".into()));
    parts
}

/// Renders `t` for `messages` with `add_generation_prompt`, contents marked, and splits
/// the result into template text and content.
fn template_parts(t: &ChatTemplate, messages: &[ChatMessage]) -> Result<Vec<ChatPart>> {
    let marked: Vec<ChatMessage> = messages
        .iter()
        .map(|m| {
            let clean: String = m
                .content
                .chars()
                .map(|c| {
                    if c == OPEN || c == CLOSE {
                        '\u{FFFD}'
                    } else {
                        c
                    }
                })
                .collect();
            ChatMessage::new(&m.role, &format!("{OPEN}{clean}{CLOSE}"))
        })
        .collect();
    let text = render(t, &marked)?;
    let mut parts = Vec::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find(OPEN) {
        let after = &rest[open + OPEN.len_utf8()..];
        let close = after.find(CLOSE).filter(|&c| !after[..c].contains(OPEN));
        let Some(close) = close else {
            return Err(Error::Input(
                "the model's chat template cuts message text apart, so onebit cannot keep it plain text; use the built-in format (a GGUF without tokenizer.chat_template)".into(),
            ));
        };
        if open > 0 {
            parts.push(ChatPart::Template(rest[..open].to_string()));
        }
        parts.push(ChatPart::Content(after[..close].to_string()));
        rest = &after[close + CLOSE.len_utf8()..];
    }
    if rest.contains(CLOSE) {
        return Err(Error::Input(
            "the model's chat template cuts message text apart, so onebit cannot keep it plain text".into(),
        ));
    }
    if !rest.is_empty() {
        parts.push(ChatPart::Template(rest.to_string()));
    }
    Ok(parts)
}

/// The template rendered as transformers renders it (`add_generation_prompt` true).
pub fn render(t: &ChatTemplate, messages: &[ChatMessage]) -> Result<String> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(marked_methods);
    env.add_filter("trim", trim_filter);
    env.add_function("raise_exception", raise_exception);
    env.add_template("chat", &t.source)
        .map_err(|e| template_error("does not parse", e))?;
    let messages: Value = messages
        .iter()
        .map(|m| Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())]))
        .collect();
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => t.bos_token.as_str(),
        eos_token => t.eos_token.as_str(),
    };
    env.get_template("chat")
        .and_then(|tmpl| tmpl.render(ctx))
        .map_err(|e| template_error("failed", e))
}

fn template_error(what: &str, e: minijinja::Error) -> Error {
    Error::Input(format!("the model's chat template {what}: {e:#}"))
}

/// The template's own way to refuse a conversation (`raise_exception('...')`).
fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// Trims `s` (of `chars`, default whitespace); inside the content markers when `s` is one
/// marked message content, so that the marked render trims what the plain one would.
fn trim_marked(s: &str, chars: Option<&str>, left: bool, right: bool) -> String {
    let trim = |x: &str| -> String {
        let is_trimmed = |c: char| chars.map_or(c.is_whitespace(), |set| set.contains(c));
        let x = if left {
            x.trim_start_matches(is_trimmed)
        } else {
            x
        };
        let x = if right {
            x.trim_end_matches(is_trimmed)
        } else {
            x
        };
        x.to_string()
    };
    match s
        .strip_prefix(OPEN)
        .and_then(|x| x.strip_suffix(CLOSE))
        .filter(|inner| !inner.contains(OPEN) && !inner.contains(CLOSE))
    {
        Some(inner) => format!("{OPEN}{}{CLOSE}", trim(inner)),
        None => trim(s),
    }
}

fn trim_filter(s: String, chars: Option<String>) -> String {
    trim_marked(&s, chars.as_deref(), true, true)
}

/// Python's `str.strip`/`lstrip`/`rstrip` marker-aware; every other method as minijinja's
/// Python compatibility layer has it.
fn marked_methods(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    if let Some(s) = value.as_str() {
        let sides = match method {
            "strip" => Some((true, true)),
            "lstrip" => Some((true, false)),
            "rstrip" => Some((false, true)),
            _ => None,
        };
        if let Some((left, right)) = sides {
            let chars = args.first().and_then(Value::as_str);
            return Ok(Value::from(trim_marked(s, chars, left, right)));
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> ChatTemplate {
        ChatTemplate {
            source: source.into(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        }
    }

    #[test]
    fn builtin_format_matches_the_2b4t_template() {
        let text: String = builtin_parts(&[ChatMessage::new("user", " How are you? ")])
            .into_iter()
            .map(|p| match p {
                ChatPart::Template(t) | ChatPart::Content(t) => t,
            })
            .collect();
        assert_eq!(
            text,
            "<|begin_of_text|>User: How are you?<|eot_id|>Assistant: "
        );
    }

    #[test]
    fn content_is_split_out_and_trimmed_inside_the_markers() {
        let t = template(
            "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] | trim }}|{{ m.content.strip() }}{% endfor %}",
        );
        let parts = template_parts(&t, &[ChatMessage::new("user", "  hi <x>  ")]).unwrap();
        assert_eq!(
            parts,
            vec![
                ChatPart::Template("<s>[user]".into()),
                ChatPart::Content("hi <x>".into()),
                ChatPart::Template("|".into()),
                ChatPart::Content("hi <x>".into()),
            ]
        );
        assert_eq!(
            render(&t, &[ChatMessage::new("user", "  hi <x>  ")]).unwrap(),
            "<s>[user]hi <x>|hi <x>"
        );
    }

    #[test]
    fn template_errors_are_errors_not_panics() {
        let bad = template("{% for m in messages %}");
        assert!(render(&bad, &[]).unwrap_err().to_string().contains("parse"));
        let raises = template("{{ raise_exception('only user turns') }}");
        let e = render(&raises, &[]).unwrap_err().to_string();
        assert!(e.contains("only user turns"), "{e}");
        let cuts = template("{% for m in messages %}{{ m.content[:3] }}{% endfor %}");
        let e = template_parts(&cuts, &[ChatMessage::new("user", "abcdef")]).unwrap_err();
        assert!(e.to_string().contains("cuts message text"), "{e}");
    }

    #[test]
    fn a_message_cannot_smuggle_the_markers() {
        let t = template("{% for m in messages %}{{ m.content }}{% endfor %}");
        let parts = template_parts(&t, &[ChatMessage::new("user", "a\u{E001}b\u{E000}c")]);
        assert_eq!(
            parts.unwrap(),
            vec![ChatPart::Content("a\u{FFFD}b\u{FFFD}c".into())]
        );
    }
}
