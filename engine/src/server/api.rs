//! Request bodies of the OpenAI routes, with both OpenAI's and llama.cpp's parameter
//! names, checked into a [`Plan`] the handlers can run. Every rejection names the
//! parameter and what would be accepted.

use super::error::ApiError;
use crate::chat::ChatMessage;
use crate::sampler::SamplingParams;
use serde::Deserialize;

/// Sampling and length parameters shared by both routes.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub model: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    #[serde(alias = "max_completion_tokens", alias = "n_predict")]
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    #[serde(alias = "repetition_penalty")]
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub n: Option<i64>,
    pub cache_prompt: Option<bool>,
    /// llama.cpp's `ignore_eos`: keep generating past end-of-sequence tokens (fixed-length
    /// runs for benchmarks).
    pub ignore_eos: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// Chat: `logprobs: true` with `top_logprobs: n`.
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    #[serde(flatten)]
    pub params: Params,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    /// Completions: `logprobs: n` (0..=20).
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub echo: bool,
    #[serde(flatten)]
    pub params: Params,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
}

/// `POST /tokenize` (llama.cpp's route).
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default)]
    pub add_special: bool,
    #[serde(default)]
    pub with_pieces: bool,
}

/// `POST /detokenize`.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub tokens: Vec<i64>,
}

/// Defaults the daemon was started with (`--temp`, `-n`, ...).
#[derive(Clone, Debug)]
pub struct Defaults {
    pub sampling: SamplingParams,
    /// `-n`: default new-token limit; None = until the context is full.
    pub max_tokens: Option<usize>,
}

/// A checked generation request.
#[derive(Debug)]
pub struct Plan {
    pub sampling: SamplingParams,
    /// None: up to the context.
    pub max_tokens: Option<usize>,
    pub stops: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub cache_prompt: bool,
    pub ignore_eos: bool,
}

const MAX_STOPS: usize = 16;
const MAX_STOP_LEN: usize = 256;
pub const MAX_LOGPROBS: usize = 20;

fn invalid(param: &str, msg: String) -> ApiError {
    ApiError::invalid(msg).param(param)
}

impl Params {
    /// Refuses a `model` other than `served` (for `--strict-model`; otherwise any name is
    /// served by the one model there is).
    pub fn check_model(&self, served: &str) -> Result<(), ApiError> {
        match &self.model {
            Some(m) if !m.is_empty() && m != served => Err(ApiError::model_not_found(m, served)),
            _ => Ok(()),
        }
    }

    /// Checks every parameter against the limits; `n_ctx` is a slot's context.
    pub fn plan(&self, n_ctx: usize, d: &Defaults) -> Result<Plan, ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(invalid("n", format!("n = {n}: onebitd returns one choice per request; send n = 1 or several requests")));
            }
        }
        let max_tokens = match self.max_tokens {
            None => d.max_tokens,
            Some(-1) => None,
            Some(v) if v < 1 => {
                return Err(invalid("max_tokens", format!("max_tokens = {v}: must be at least 1 (or -1 for no limit)")))
            }
            Some(v) if v as u64 > n_ctx as u64 => {
                return Err(invalid(
                    "max_tokens",
                    format!("max_tokens = {v} is more than the context of {n_ctx} tokens; ask for at most {n_ctx}"),
                ))
            }
            Some(v) => Some(v as usize),
        };
        let mut s = d.sampling.clone();
        if let Some(t) = self.temperature {
            s.temperature = t;
        }
        if let Some(v) = self.top_p {
            s.top_p = v;
        }
        if let Some(k) = self.top_k {
            if k < 0 {
                return Err(invalid(
                    "top_k",
                    format!("top_k = {k}: must be >= 0 (0 disables it)"),
                ));
            }
            s.top_k = k as usize;
        }
        if let Some(v) = self.min_p {
            s.min_p = v;
        }
        if let Some(v) = self.repeat_penalty {
            s.repeat_penalty = v;
        }
        if let Some(n) = self.repeat_last_n {
            s.repeat_last_n = match n {
                -1 => n_ctx,
                n if n < 0 => {
                    return Err(invalid(
                        "repeat_last_n",
                        format!("repeat_last_n = {n}: must be >= 0, or -1 for the whole context"),
                    ))
                }
                n => (n as usize).min(n_ctx),
            };
        }
        if let Some(v) = self.presence_penalty {
            s.presence_penalty = v;
        }
        if let Some(v) = self.frequency_penalty {
            s.frequency_penalty = v;
        }
        for (name, v) in [
            ("presence_penalty", s.presence_penalty),
            ("frequency_penalty", s.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(invalid(
                    name,
                    format!("{name} = {v}: must be between -2 and 2"),
                ));
            }
        }
        if s.temperature > 100.0 {
            return Err(invalid(
                "temperature",
                format!("temperature = {}: must be at most 100", s.temperature),
            ));
        }
        s.seed = match self.seed {
            None | Some(-1) => d.sampling.seed,
            Some(v) if v < 0 => {
                return Err(invalid(
                    "seed",
                    format!("seed = {v}: must be >= 0, or -1 for a random seed"),
                ))
            }
            Some(v) => Some(v as u64),
        };
        s.validate().map_err(|e| {
            let name = e
                .split_whitespace()
                .next()
                .unwrap_or("sampling")
                .to_string();
            invalid(&name, e)
        })?;
        let stops = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stops.len() > MAX_STOPS {
            return Err(invalid(
                "stop",
                format!(
                    "{} stop strings: at most {MAX_STOPS} are allowed",
                    stops.len()
                ),
            ));
        }
        if let Some(long) = stops.iter().find(|s| s.len() > MAX_STOP_LEN) {
            return Err(invalid(
                "stop",
                format!(
                    "a stop string of {} bytes: at most {MAX_STOP_LEN} are allowed",
                    long.len()
                ),
            ));
        }
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(invalid(
                "stream_options",
                "stream_options is only allowed when stream is true".into(),
            ));
        }
        Ok(Plan {
            sampling: s,
            max_tokens,
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            stream,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            cache_prompt: self.cache_prompt.unwrap_or(true),
            ignore_eos: self.ignore_eos.unwrap_or(false),
        })
    }
}

impl ChatRequest {
    pub fn chat_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(invalid(
                "messages",
                "messages is empty: send at least one message".into(),
            ));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                    return Err(invalid(
                        &format!("messages[{i}].role"),
                        format!("unknown role {:?}; use system, developer, user, assistant or tool", m.role),
                    ));
                }
                let text = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut t = String::new();
                        for (j, p) in parts.iter().enumerate() {
                            match (p.kind.as_str(), &p.text) {
                                ("text", Some(s)) => t.push_str(s),
                                _ => {
                                    return Err(invalid(
                                        &format!("messages[{i}].content[{j}]"),
                                        format!("content part of type {:?}: this model reads text parts only", p.kind),
                                    ))
                                }
                            }
                        }
                        t
                    }
                };
                Ok(ChatMessage::new(&m.role, &text))
            })
            .collect()
    }

    /// `Some(n)` when logprobs are asked for.
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        let n = self.top_logprobs.unwrap_or(0);
        if !(0..=MAX_LOGPROBS as i64).contains(&n) {
            return Err(invalid(
                "top_logprobs",
                format!("top_logprobs = {n}: must be between 0 and {MAX_LOGPROBS}"),
            ));
        }
        match self.logprobs {
            Some(true) => Ok(Some(n as usize)),
            _ if self.top_logprobs.is_some() && n > 0 => Err(invalid(
                "top_logprobs",
                "top_logprobs needs logprobs: true".into(),
            )),
            _ => Ok(None),
        }
    }
}

impl CompletionRequest {
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match self.logprobs {
            None => Ok(None),
            Some(n) if (0..=MAX_LOGPROBS as i64).contains(&n) => Ok(Some(n as usize)),
            Some(n) => Err(invalid(
                "logprobs",
                format!("logprobs = {n}: must be between 0 and {MAX_LOGPROBS}"),
            )),
        }
    }
}

/// Parses a JSON body into `T`, turning serde's message into an OpenAI error.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            "the request body is empty; send a JSON object".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "malformed JSON"
        } else {
            "invalid request"
        };
        ApiError::invalid(format!("{what}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Defaults {
        Defaults {
            sampling: SamplingParams::default(),
            max_tokens: None,
        }
    }

    fn plan(json: &str) -> Result<Plan, ApiError> {
        parse::<CompletionRequest>(json.as_bytes())?
            .params
            .plan(512, &d())
    }

    #[test]
    fn accepts_both_spellings() {
        let p = plan(r#"{"prompt":"x","max_completion_tokens":7,"repetition_penalty":1.2,"stop":"a","seed":3}"#).unwrap();
        assert_eq!(p.max_tokens, Some(7));
        assert_eq!(p.sampling.repeat_penalty, 1.2);
        assert_eq!(p.sampling.seed, Some(3));
        assert_eq!(p.stops, ["a"]);
        let p = plan(
            r#"{"prompt":"x","max_tokens":7,"repeat_penalty":1.1,"stop":["a","b"],"model":"m"}"#,
        )
        .unwrap();
        assert_eq!(p.stops, ["a", "b"]);
        assert_eq!(p.sampling.repeat_penalty, 1.1);
    }

    #[test]
    fn rejects_bad_values_naming_the_parameter() {
        for (json, param) in [
            (r#"{"prompt":"x","max_tokens":-5}"#, "max_tokens"),
            (r#"{"prompt":"x","max_tokens":100000000000}"#, "max_tokens"),
            (r#"{"prompt":"x","max_tokens":0}"#, "max_tokens"),
            (r#"{"prompt":"x","temperature":-1}"#, "temperature"),
            (r#"{"prompt":"x","top_p":2}"#, "top_p"),
            (r#"{"prompt":"x","top_k":-2}"#, "top_k"),
            (r#"{"prompt":"x","n":3}"#, "n"),
            (r#"{"prompt":"x","seed":-7}"#, "seed"),
            (r#"{"prompt":"x","presence_penalty":9}"#, "presence_penalty"),
            (
                r#"{"prompt":"x","stream_options":{"include_usage":true}}"#,
                "stream_options",
            ),
        ] {
            let e = plan(json).unwrap_err();
            assert_eq!(e.status, 400, "{json}");
            assert_eq!(e.param.as_deref(), Some(param), "{json}: {}", e.message);
        }
        let q: CompletionRequest = parse(br#"{"prompt":"x","model":"gpt-9"}"#).unwrap();
        assert!(q.params.plan(512, &d()).is_ok(), "any model name plans");
        q.params.check_model("gpt-9").unwrap();
        let e = q.params.check_model("m").unwrap_err();
        assert_eq!(e.status, 404);
        assert!(
            e.message.contains("gpt-9") && e.message.contains("'m'"),
            "{}",
            e.message
        );
        assert!(parse::<CompletionRequest>(b"{")
            .unwrap_err()
            .message
            .starts_with("malformed JSON"));
        assert!(parse::<CompletionRequest>(b"{\"prompt\":3}")
            .unwrap_err()
            .message
            .starts_with("invalid request"));
        assert!(parse::<CompletionRequest>(b"").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// Any JSON-ish body gives a plan or an error, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(body in r#"\{("(prompt|messages|max_tokens|temperature|top_k|top_p|min_p|seed|stop|n|logprobs|top_logprobs|stream|stream_options|repeat_last_n|role|content)":(-?[0-9]{1,12}(\.[0-9])?|"[a-z]{0,3}"|\[[0-9,]{0,6}\]|true|null|\{\}),?){0,6}\}"#) {
            if let Ok(r) = parse::<CompletionRequest>(body.as_bytes()) {
                let _ = r.params.plan(512, &d());
                let _ = r.logprobs();
            }
            if let Ok(r) = parse::<ChatRequest>(body.as_bytes()) {
                let _ = r.params.plan(512, &d());
                let _ = r.chat_messages();
                let _ = r.logprobs();
            }
        }
    }

    #[test]
    fn chat_content_forms() {
        let r: ChatRequest = parse(
            br#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","content":null}]}"#,
        )
        .unwrap();
        let m = r.chat_messages().unwrap();
        assert_eq!(m[1], ChatMessage::new("user", "hi"));
        let r: ChatRequest = parse(br#"{"messages":[{"role":"wizard","content":"x"}]}"#).unwrap();
        assert_eq!(
            r.chat_messages().unwrap_err().param.as_deref(),
            Some("messages[0].role")
        );
        let r: ChatRequest =
            parse(br#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#).unwrap();
        assert!(r.chat_messages().is_err());
        let r: ChatRequest = parse(br#"{"messages":[],"logprobs":true,"top_logprobs":3}"#).unwrap();
        assert!(r.chat_messages().is_err());
        assert_eq!(r.logprobs().unwrap(), Some(3));
    }
}
