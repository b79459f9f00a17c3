//! Each family's own chat template, from its HF directory and from the GGUF onebit writes of
//! it, against the prompts transformers' `apply_chat_template` rendered
//! (`tests/fixtures/zoo/<family>/chat.json`, made by `tools/zoo/make_fixtures.py`): system
//! prompts, multi-turn conversations, and a message that spells out special tokens, which
//! must stay plain text in the ids.

use onebit_engine::chat::{chat_ids, format_chat, ChatMessage};
use onebit_engine::format::gguf_write::{write_file, GgufWriteOptions};
use onebit_engine::tokenizer::Tokenizer;
use onebit_tests::repo_fixture;
use serde_json::Value;

const FAMILIES: [&str; 4] = ["bitnet-2b4t", "llama3", "falcon3", "falcon-e"];

fn messages(v: &Value) -> Vec<ChatMessage> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

/// The family's tokenizer from its HF directory and from a GGUF made of it.
fn tokenizers(family: &str) -> Option<(Value, Vec<(&'static str, Tokenizer)>)> {
    let golden = repo_fixture(&format!("zoo/{family}/chat.json"))?;
    let dir = golden.parent().unwrap().join("hf");
    let json = serde_json::from_slice(&std::fs::read(&golden).unwrap()).unwrap();
    let (model, tok) = onebit_engine::format::load(&dir).unwrap();
    let gguf = std::env::temp_dir().join(format!(
        "onebit-zoo-chat-{family}-{}-{:?}.gguf",
        std::process::id(),
        std::thread::current().id()
    ));
    write_file(&gguf, &model, &tok, &GgufWriteOptions::default()).unwrap();
    let (_, from_gguf) = onebit_engine::format::load(&gguf).unwrap();
    std::fs::remove_file(&gguf).ok();
    Some((json, vec![("hf", tok), ("gguf", from_gguf)]))
}

#[test]
fn templates_render_as_transformers_renders_them() {
    for family in FAMILIES {
        let Some((golden, toks)) = tokenizers(family) else {
            continue;
        };
        for (format, tok) in &toks {
            assert!(
                tok.chat_template().is_some(),
                "{family}/{format}: the model's template was not found"
            );
            for (name, case) in golden.as_object().unwrap() {
                let msgs = messages(&case["messages"]);
                let want = case["text"].as_str().unwrap();
                let text = format_chat(tok, &msgs).unwrap();
                assert_eq!(text, want, "{family}/{format}/{name}: rendered prompt");
                // The ids spell the same text back, template tokens included.
                let ids = chat_ids(tok, &msgs).unwrap();
                assert_eq!(
                    tok.decode(&ids).unwrap(),
                    want,
                    "{family}/{format}/{name}: decoded ids"
                );
                // Where no message spells a special token, they are the ids of the whole
                // rendered text, as `apply_chat_template(tokenize=True)` gives.
                if name != "forged_turn" {
                    assert_eq!(
                        ids,
                        tok.encode(want, false).unwrap(),
                        "{family}/{format}/{name}: ids"
                    );
                }
            }
        }
    }
}

#[test]
fn message_text_never_becomes_a_special_token() {
    for family in FAMILIES {
        let Some((golden, toks)) = tokenizers(family) else {
            continue;
        };
        let forged = messages(&golden["forged_turn"]["messages"]);
        let content = &forged[0].content;
        for (format, tok) in &toks {
            let specials = |ids: &[u32]| ids.iter().filter(|&&i| tok.is_special(i)).count();
            let plain = [ChatMessage::new("user", "hi")];
            let with_forgery = chat_ids(tok, &forged).unwrap();
            assert_eq!(
                specials(&with_forgery),
                specials(&chat_ids(tok, &plain).unwrap()),
                "{family}/{format}: a message spelling {content:?} added special tokens"
            );
            // Parsed as a completion prompt, the same text does contain them.
            assert!(
                specials(&tok.encode(content, false).unwrap()) > 0,
                "{family}/{format}: the forgery should name real special tokens"
            );
        }
    }
}

#[test]
fn a_model_without_a_template_keeps_the_builtin_format() {
    let Some(dir) = repo_fixture("zoo/1bitllm/hf") else {
        return;
    };
    let (_, tok) = onebit_engine::format::load(&dir).unwrap();
    assert!(tok.chat_template().is_none());
    let text = format_chat(&tok, &[ChatMessage::new("user", "hi")]).unwrap();
    assert_eq!(text, "<|begin_of_text|>User: hi<|eot_id|>Assistant: ");
    // 1bitLLM's LLaMA-2 vocabulary has no <|eot_id|>: a clear error, not a forged prompt.
    let e = chat_ids(&tok, &[ChatMessage::new("user", "hi")]).unwrap_err();
    assert!(e.to_string().contains("no chat template"), "{e}");
}

/// `/v1/chat/completions` builds its prompt through the server's vocabulary: the model's
/// template, with the same ids `onebit run --chat` uses.
#[test]
fn the_server_renders_the_models_template() {
    use onebit_engine::server::backend::Vocab;
    use onebit_engine::server::engine::EngineVocab;
    let Some((golden, toks)) = tokenizers("llama3") else {
        return;
    };
    let msgs = messages(&golden["multi_turn"]["messages"]);
    let want = golden["multi_turn"]["text"].as_str().unwrap();
    for (format, tok) in toks {
        let ids = chat_ids(&tok, &msgs).unwrap();
        let vocab = EngineVocab::new(std::sync::Arc::new(tok.clone()), tok.vocab_size());
        assert_eq!(vocab.chat_prompt(&msgs).unwrap(), ids, "{format}");
        assert_eq!(tok.decode(&ids).unwrap(), want, "{format}");
    }
}

/// BitNet's built-in format, the fallback for a model without a template, is the 2B-4T
/// checkpoint's own template: the same text and ids.
#[test]
fn the_builtin_format_is_the_2b4t_template() {
    let Some((golden, toks)) = tokenizers("bitnet-2b4t") else {
        return;
    };
    let (_, tok) = &toks[0];
    let mut builtin = tok.clone();
    builtin.set_chat_template(None);
    for (name, case) in golden.as_object().unwrap() {
        let msgs = messages(&case["messages"]);
        let want = case["text"].as_str().unwrap();
        assert_eq!(format_chat(&builtin, &msgs).unwrap(), want, "{name}");
        assert_eq!(
            chat_ids(&builtin, &msgs).unwrap(),
            chat_ids(tok, &msgs).unwrap(),
            "{name}"
        );
    }
}
