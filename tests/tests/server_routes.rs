//! onebitd's route table (404, 405 with `Allow`, which routes need the key), model names
//! (any accepted, or 404 under `--strict-model`), and the embedded chat page, on the
//! model compiled into onebit.

mod server_support;

use serde_json::json;
use server_support::*;

fn chat_as(port: u16, model: &str) -> Resp {
    post(
        port,
        "/v1/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}),
    )
}

#[test]
fn any_model_name_is_served_by_the_loaded_model() {
    let (srv, port) = start_embedded(opts(), 256);
    for name in ["gpt-4o", EMBEDDED_ID, ""] {
        let r = chat_as(port, name);
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let v = r.json();
        assert_eq!(
            v["model"], EMBEDDED_ID,
            "the response names the model that answered"
        );
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    }
    let r = post(
        port,
        "/v1/completions",
        &json!({"model": "llama", "prompt": "Once", "max_tokens": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    srv.shutdown();
}

#[test]
fn strict_model_refuses_other_names() {
    let mut o = opts();
    o.strict_model = true;
    let (srv, port) = start_embedded(o, 256);
    let r = chat_as(port, "gpt-4o");
    assert_eq!(r.status, 404);
    let e = &r.json()["error"];
    assert_eq!(e["param"], "model");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("gpt-4o") && msg.contains(EMBEDDED_ID), "{msg}");
    let r = post(
        port,
        "/v1/completions",
        &json!({"model": "llama", "prompt": "Once", "max_tokens": 2}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(chat_as(port, EMBEDDED_ID).status, 200);
    srv.shutdown();
}

#[test]
fn the_route_table_answers_404_and_405_with_allow() {
    let (srv, port) = start_embedded(opts(), 256);
    let r = get(port, "/v2/nothing");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    for (method, path, allow) in [
        ("GET", "/v1/chat/completions", "POST"),
        ("GET", "/tokenize", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("PUT", "/", "GET"),
        ("DELETE", "/webui/chat.js", "GET"),
    ] {
        let r = request(port, method, path, &[], b"");
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("Allow"), Some(allow), "{method} {path}");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(allow));
    }
    for path in [
        "/health",
        "/v1/health",
        "/v1/models",
        "/models",
        "/props",
        "/metrics",
    ] {
        assert_eq!(get(port, path).status, 200, "{path}");
    }
    srv.shutdown();
}

#[test]
fn the_chat_page_is_open_but_the_api_behind_it_needs_the_key() {
    let mut o = opts();
    o.api_key = Some("s3cret".into());
    let (srv, port) = start_embedded(o, 256);
    for path in ["/", "/webui/chat.js", "/webui/chat.css"] {
        assert_eq!(get(port, path).status, 200, "{path}");
    }
    assert_eq!(chat_as(port, EMBEDDED_ID).status, 401);
    srv.shutdown();
}

#[test]
fn the_chat_page_is_embedded_with_a_strict_csp_and_no_outside_code() {
    let (srv, port) = start_embedded(opts(), 256);
    let page = get(port, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page
        .header("Content-Security-Policy")
        .expect("a CSP header");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.header("X-Content-Type-Options"), Some("nosniff"));
    let html = page.text();
    assert!(html.contains(r#"<script src="/webui/chat.js""#), "{html}");
    assert!(
        !html.contains("<script>"),
        "no inline script: the CSP would block it"
    );
    let js = get(port, "/webui/chat.js");
    assert_eq!(
        js.header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.header("Content-Security-Policy").is_some());
    let css = get(port, "/webui/chat.css");
    assert_eq!(css.header("Content-Type"), Some("text/css; charset=utf-8"));
    // Model output only ever reaches the page as text, and nothing is loaded from elsewhere.
    let js = js.text();
    assert!(js.contains("textContent") && js.contains("/v1/chat/completions"));
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ] {
        assert!(!js.contains(sink), "chat.js uses {sink}");
    }
    for asset in [&html, &js, &css.text()] {
        assert!(
            !asset.contains("http://") && !asset.contains("https://"),
            "an outside URL"
        );
    }
    srv.shutdown();
}

#[test]
fn no_webui_turns_the_page_off() {
    let mut o = opts();
    o.webui = false;
    let (srv, port) = start_embedded(o, 256);
    for path in ["/", "/webui/chat.js", "/webui/chat.css"] {
        let r = get(port, path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--no-webui"));
    }
    assert_eq!(chat_as(port, EMBEDDED_ID).status, 200);
    srv.shutdown();
}
