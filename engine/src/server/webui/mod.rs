//! The chat page onebitd serves at `GET /` (off with `--no-webui`): one HTML page, one
//! script and one style sheet, compiled into the binary, with no third-party code.
//!
//! The page talks to the same `/v1/chat/completions` route as any client, streaming SSE,
//! and sends the API key the user typed (kept in the browser's localStorage) as a Bearer
//! token; the page itself needs no key, since it holds no data. Model output is untrusted
//! text: the script only ever sets `textContent`, and every asset goes out with a
//! Content-Security-Policy that allows scripts, styles and connections from this origin
//! alone (no inline script, no `eval`, no frames), so that even a markup-injection bug
//! could not run code or send the conversation elsewhere.

use super::error::ApiError;
use super::http::Response;
use super::routes::Reply;
use super::Shared;

/// One embedded file of the page.
#[derive(Clone, Copy, Debug)]
pub enum Asset {
    Page,
    Script,
    Style,
}

impl Asset {
    fn content(self) -> (&'static str, &'static str) {
        match self {
            Asset::Page => ("text/html; charset=utf-8", include_str!("index.html")),
            Asset::Script => ("text/javascript; charset=utf-8", include_str!("chat.js")),
            Asset::Style => ("text/css; charset=utf-8", include_str!("chat.css")),
        }
    }
}

/// Scripts, styles and fetches from this origin only; nothing inline, no plugins, no
/// frames, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Serves `asset`, or 404 when the page is turned off.
pub(super) fn page(sh: &Shared, asset: Asset) -> Result<Reply, ApiError> {
    if !sh.opts.webui {
        return Err(ApiError::new(
            404,
            "not_found_error",
            "the chat page is off (onebitd --no-webui); the API is under /v1",
        ));
    }
    let (content_type, body) = asset.content();
    Ok(Reply::Send(
        Response::text(200, content_type, body.to_string())
            .with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            .with_header("X-Content-Type-Options", "nosniff")
            .with_header("Referrer-Policy", "no-referrer")
            .with_header("Cache-Control", "no-cache"),
    ))
}
