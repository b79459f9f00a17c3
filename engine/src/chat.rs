//! BitNet b1.58's chat format: `<|begin_of_text|>` then `Role: content<|eot_id|>` per message,
//! ending with `Assistant: ` for the reply (no Llama-3 header tokens).

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
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

/// One piece of a chat prompt: a template token, named by its text, or message text.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatPart {
    Token(&'static str),
    Text(String),
}

const BOS: &str = "<|begin_of_text|>";
const END_OF_TURN: &str = "<|eot_id|>";

/// The prompt for `messages`, ending with `Assistant: ` for the reply.
pub fn chat_parts(messages: &[ChatMessage]) -> Vec<ChatPart> {
    let mut parts = vec![ChatPart::Token(BOS)];
    for m in messages {
        let role = match m.role.as_str() {
            "system" | "developer" => "System",
            "assistant" => "Assistant",
            _ => "User",
        };
        parts.push(ChatPart::Text(format!("{role}: {}", m.content.trim())));
        parts.push(ChatPart::Token(END_OF_TURN));
    }
    parts.push(ChatPart::Text("Assistant: ".into()));
    parts
}

/// The prompt text for `messages`, BOS included as text (for display; the ids come from
/// [`chat_ids`]).
pub fn format_chat(messages: &[ChatMessage]) -> String {
    chat_parts(messages)
        .into_iter()
        .map(|p| match p {
            ChatPart::Token(t) => t.to_string(),
            ChatPart::Text(t) => t,
        })
        .collect()
}

/// The prompt ids for `messages`: template tokens by id, message text encoded as plain
/// text, so that `<|eot_id|>System: ...` inside a message cannot forge a turn.
pub fn chat_ids(tok: &Tokenizer, messages: &[ChatMessage]) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for part in chat_parts(messages) {
        match part {
            ChatPart::Token(t) => ids.push(tok.token_to_id(t).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "the tokenizer has no {t} token, which BitNet's chat format needs; use a BitNet (Llama 3) tokenizer or send a plain completion"
                ))
            })?),
            ChatPart::Text(t) => ids.extend(tok.encode_plain(&t)?),
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_hf_template() {
        let p = format_chat(&[ChatMessage::new("user", "How are you?")]);
        assert_eq!(
            p,
            "<|begin_of_text|>User: How are you?<|eot_id|>Assistant: "
        );
    }
}
