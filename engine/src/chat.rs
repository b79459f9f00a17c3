//! BitNet b1.58's chat format: `<|begin_of_text|>` then `Role: content<|eot_id|>` per message,
//! ending with `Assistant: ` for the reply (no Llama-3 header tokens).

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

/// The prompt text for `messages`, BOS included as text (encode it with `add_bos = false`).
pub fn format_chat(messages: &[ChatMessage]) -> String {
    let mut s = String::from("<|begin_of_text|>");
    for m in messages {
        let role = match m.role.as_str() {
            "system" | "developer" => "System",
            "assistant" => "Assistant",
            _ => "User",
        };
        s.push_str(role);
        s.push_str(": ");
        s.push_str(m.content.trim());
        s.push_str("<|eot_id|>");
    }
    s.push_str("Assistant: ");
    s
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
