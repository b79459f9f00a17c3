//! OpenAI-style error bodies: `{"error": {"code", "message", "type", "param"}}`, with the
//! HTTP status as `code` as llama-server sends it.

use super::http::Response;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// Seconds for a `Retry-After` header (503 when full or loading).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    pub fn invalid(message: String) -> Self {
        Self::new(400, "invalid_request_error", message)
    }

    pub fn param(mut self, p: &str) -> Self {
        self.param = Some(p.to_string());
        self
    }

    pub fn model_not_found(asked: &str, served: &str) -> Self {
        Self::new(404, "invalid_request_error", format!("model {asked:?} is not served here; this onebitd serves '{served}' (see GET /v1/models)"))
            .param("model")
    }

    pub fn loading() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(503, "unavailable_error", "Loading model")
        }
    }

    pub fn busy(retry: u32) -> Self {
        Self {
            retry_after: Some(retry),
            ..Self::new(
                503,
                "unavailable_error",
                "all slots are busy and the queue is full; retry after the Retry-After delay",
            )
        }
    }

    pub fn closing() -> Self {
        Self::new(503, "unavailable_error", "the server is shutting down")
    }

    pub fn unauthorized() -> Self {
        Self::new(
            401,
            "authentication_error",
            "invalid or missing API key: send 'Authorization: Bearer <key>'",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "server_error", message)
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.status, "message": self.message, "type": self.kind, "param": self.param}})
    }

    pub fn response(&self) -> Response {
        let mut r = Response::json(self.status, &self.body());
        if let Some(s) = self.retry_after {
            r = r.with_header("Retry-After", s.to_string());
        }
        if self.status == 401 {
            r = r.with_header("WWW-Authenticate", "Bearer");
        }
        r
    }
}

/// The engine's typed errors as HTTP answers: the client's input is a 400, a failed
/// compute surface a 503 (another try may land on the CPU), anything else a 500.
impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Input(m) => Self::invalid(m),
            crate::Error::Tokenizer(m) => Self::invalid(format!("tokenizer: {m}")),
            crate::Error::Device(m) => Self::new(503, "unavailable_error", m),
            other => Self::new(500, "server_error", other.to_string()),
        }
    }
}
