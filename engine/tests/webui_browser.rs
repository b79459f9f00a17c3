//! The chat page in a real browser: headless Chromium (Debian's `chromium`) driven through
//! the DevTools protocol loads onebitd's page, types the API key and a message, and waits
//! for the streamed answer, which must be the text the API gives for the same request.
//! The message carries markup that must show as text and never run, and the page's CSP
//! must stop an inline script. A screenshot is left in the target directory.
//!
//! Skips, saying why, where Chromium is absent; fails there under `CI=true`.

use base64::Engine as _;
use onebit_engine::backend::cpu::CpuBackend;
use onebit_engine::server::backend::ModelInfo;
use onebit_engine::server::engine::EngineVocab;
use onebit_engine::server::listen::Listener;
use onebit_engine::server::{Options, Server};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const API_KEY: &str = "page-key";
const MODEL_ID: &str = "onebit-tiny";
/// Markup a careless page would run; it must be shown as it is.
const MESSAGE: &str = "Tell me <img src=x onerror=\"window.__xss=1\"> a story";

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

fn start_server() -> (Server, u16) {
    let (model, tok) = onebit_engine::embedded::load().expect("the embedded model");
    let n_vocab = model.config.vocab_size;
    let info = ModelInfo::new(&model, MODEL_ID.into(), 512, n_vocab);
    let mut opts = Options {
        api_key: Some(API_KEY.into()),
        ..Options::default()
    };
    opts.defaults.sampling.temperature = 0.0;
    opts.defaults.max_tokens = Some(24);
    let server = Server::start(opts, vec![Listener::bind("127.0.0.1", 0).unwrap()]).unwrap();
    let vocab = Arc::new(EngineVocab::new(Arc::new(tok), n_vocab));
    server
        .set_ready(CpuBackend::new(Arc::new(model), 0), vocab, info)
        .unwrap();
    let port = server.ports()[0];
    (server, port)
}

/// The answer the API gives to the page's request, asked directly.
fn api_answer(port: u16) -> String {
    let body = json!({"messages": [{"role": "user", "content": MESSAGE}]}).to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let json_start = resp.find("\r\n\r\n").unwrap() + 4;
    let v: Value = serde_json::from_str(&resp[json_start..]).unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A headless Chromium that is killed when dropped.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Chromium and returns it with its DevTools websocket URL, read from the line it
/// prints once listening.
fn launch(bin: &PathBuf, profile: &std::path::Path) -> (Browser, String) {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-port=0",
            "--window-size=1000,700",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let browser = Browser(child);
    let url = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("chromium never said where DevTools listens");
    (browser, url)
}

/// The DevTools protocol on one websocket, with one page attached (flattened session).
struct DevTools {
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
    session: Option<String>,
    /// Events read while waiting for a reply.
    events: Vec<Value>,
}

impl DevTools {
    fn connect(url: &str) -> Self {
        let addr = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .unwrap();
        let tcp = TcpStream::connect(addr).unwrap();
        // Only a guard against a hung browser: every wait below is for a reply or an event.
        tcp.set_read_timeout(Some(Duration::from_secs(300)))
            .unwrap();
        let (ws, _) = tungstenite::client(url, tcp).expect("websocket handshake");
        Self {
            ws,
            next_id: 0,
            session: None,
            events: Vec::new(),
        }
    }

    fn read(&mut self) -> Value {
        loop {
            match self.ws.read().expect("devtools message") {
                tungstenite::Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                tungstenite::Message::Close(_) => panic!("devtools closed"),
                _ => {}
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        loop {
            let v = self.read();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    fn wait_event(&mut self, method: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(i);
        }
        loop {
            let v = self.read();
            if v["method"] == method {
                return v;
            }
        }
    }

    /// Evaluates `expr` in the page, awaiting a promise, and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{r}");
        r["result"]["value"].clone()
    }
}

#[test]
fn the_chat_page_streams_an_answer_in_chromium() {
    let Some(bin) = chromium() else {
        let msg = "chromium is not installed (apt-get install chromium; .ci/run installs it)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIP: {msg}");
        return;
    };
    let (server, port) = start_server();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let profile = out.join("webui-chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    let (_browser, url) = launch(&bin, &profile);
    let mut dt = DevTools::connect(&url);
    let target = dt.call("Target.createTarget", json!({"url": "about:blank"}));
    let session = dt.call(
        "Target.attachToTarget",
        json!({"targetId": target["targetId"], "flatten": true}),
    );
    dt.session = Some(session["sessionId"].as_str().unwrap().to_string());
    dt.call("Page.enable", json!({}));
    dt.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1000, "height": 700, "deviceScaleFactor": 1, "mobile": false}),
    );
    dt.call(
        "Page.navigate",
        json!({"url": format!("http://127.0.0.1:{port}/")}),
    );
    dt.wait_event("Page.loadEventFired");

    // The CSP stops inline script, whatever puts it in the page.
    let inline_ran = dt.eval(
        "(() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.head.appendChild(s); return window.__inline === 1; })()",
    );
    assert_eq!(
        inline_ran,
        json!(false),
        "an inline script ran despite the CSP"
    );

    // Type the key and the message, send, and wait until the page is idle again with the
    // answer's statistics (or an error) shown.
    let script = format!(
        r#"(async () => {{
            const key = document.getElementById('api-key');
            key.value = {key};
            key.dispatchEvent(new Event('change'));
            document.getElementById('message').value = {msg};
            document.getElementById('compose').requestSubmit();
            const finished = () => document.body.dataset.state === 'idle' &&
                (document.querySelector('.msg.error') ||
                 (document.querySelector('.msg.assistant .stats') || {{}}).textContent.includes('tokens,'));
            await new Promise((resolve) => {{
                if (finished()) return resolve();
                new MutationObserver(() => finished() && resolve())
                    .observe(document.body, {{subtree: true, childList: true, characterData: true, attributes: true}});
            }});
            const text = (sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent);
            const answer = document.querySelector('.msg.assistant');
            return {{
                errors: text('.msg.error'),
                user: text('.msg.user'),
                answer: answer ? answer.firstChild.textContent : null,
                stats: text('.msg.assistant .stats'),
                images: document.querySelectorAll('#log img').length,
                xss: window.__xss === undefined ? null : window.__xss,
                stored_key: localStorage.getItem('onebit.apiKey'),
                model: document.getElementById('model').textContent,
            }};
        }})()"#,
        key = json!(API_KEY),
        msg = json!(MESSAGE),
    );
    let got = dt.eval(&script);
    let shot = dt.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let shot_path = out.join("webui-chat.png");
    std::fs::write(&shot_path, &png).unwrap();
    eprintln!("screenshot: {}", shot_path.display());

    assert_eq!(got["errors"], json!([]), "{got}");
    assert_eq!(
        got["user"],
        json!([MESSAGE]),
        "markup in a message shows as text"
    );
    assert_eq!(got["images"], 0, "{got}");
    assert_eq!(got["xss"], Value::Null, "{got}");
    assert_eq!(got["stored_key"], API_KEY);
    assert!(got["model"].as_str().unwrap().contains(MODEL_ID), "{got}");
    let answer = got["answer"].as_str().unwrap();
    assert!(!answer.is_empty());
    assert_eq!(
        answer,
        api_answer(port),
        "the streamed answer is the API's answer"
    );
    let stats = got["stats"][0].as_str().unwrap();
    let (count, rate) = stats.split_once(" tokens, ").expect(stats);
    assert_eq!(count, "24", "{stats}");
    let rate = rate.strip_suffix(" tok/s").expect(stats);
    assert!(rate.parse::<f64>().unwrap() > 0.0, "{stats}");
    server.shutdown();
}
