//! Entry points of the fuzz targets (`engine/fuzz`) and of the test that replays their
//! corpora on every `cargo test` (`tests/tests/fuzz_corpora.rs`). Each takes arbitrary
//! bytes, runs one parser the way the product runs it, and checks what must hold of its
//! answer: an error is fine, a panic (or a broken invariant, which panics) is a finding.

use crate::server::{api, http, text::TextStream};
use std::io::{self, BufRead, Read};
use std::time::Duration;

/// A target's entry point: arbitrary bytes in, a panic on a finding.
pub type Entry = fn(&[u8]);

/// Every target by name: the fuzz binaries and the corpus folders use these names.
pub const TARGETS: &[(&str, Entry)] = &[
    ("http_request", http_request),
    ("json_bodies", json_bodies),
    ("text_stream", text_stream),
    ("gguf", gguf),
    ("safetensors", safetensors),
    ("tokenizer_json", tokenizer_json),
    ("sentencepiece", sentencepiece),
    ("hf_config", hf_config),
    ("xclbin", xclbin),
    ("code_object", code_object),
];

/// The entry point called `name`.
pub fn target(name: &str) -> Option<Entry> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
}

/// Request bytes as the HTTP reader sees them from a socket: delivered in pieces of a size
/// the input chooses, so that every line and chunk boundary can fall mid-read.
struct Wire<'a> {
    data: &'a [u8],
    piece: usize,
    /// What the server sent back before the response (`100 Continue`).
    sent: Vec<u8>,
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.fill_buf()?.len().min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Wire<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        Ok(&self.data[..self.data.len().min(self.piece)])
    }
    fn consume(&mut self, n: usize) {
        self.data = &self.data[n..];
    }
}

impl http::Source for Wire<'_> {
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn reply(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sent.extend_from_slice(bytes);
        Ok(())
    }
}

/// The HTTP/1.1 request reader over a keep-alive connection: requests are read until one
/// fails or the connection may not be reused. The first byte picks the read size (1-255
/// bytes, 0: all at once). Checks that every request read keeps to the limits and that
/// `100 Continue` goes out only to a request that asked for it and has a body.
pub fn http_request(data: &[u8]) {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let limits = http::Limits {
        max_head: 2048,
        max_headers: 16,
        max_body: 4096,
        ..http::Limits::default()
    };
    let mut wire = Wire {
        data,
        piece: if piece == 0 {
            usize::MAX
        } else {
            piece as usize
        },
        sent: Vec::new(),
    };
    loop {
        let before = wire.sent.len();
        let req = match http::read_request(&mut wire, &limits) {
            Ok(r) => r,
            Err(http::ReadError::Bad(status, msg)) => {
                assert!((400..600).contains(&status), "status {status}");
                assert!(!msg.is_empty());
                return;
            }
            Err(_) => return,
        };
        assert!(req.body.len() <= limits.max_body, "body over the limit");
        assert!(req.headers.len() <= limits.max_headers, "too many headers");
        assert!(req.path.starts_with('/'), "path {:?}", req.path);
        assert!(!req.method.is_empty());
        if wire.sent.len() > before {
            assert!(
                req.header("expect")
                    .is_some_and(|e| e.eq_ignore_ascii_case("100-continue")),
                "100 Continue sent unasked"
            );
        }
        if !req.keep_alive {
            return;
        }
    }
}

/// Every JSON request body, parsed and checked as its route does: chat and text
/// completions (into a plan, messages, logprobs), tokenize and detokenize.
pub fn json_bodies(data: &[u8]) {
    let defaults = api::Defaults {
        sampling: crate::sampler::SamplingParams::default(),
        max_tokens: None,
    };
    if let Ok(c) = api::parse::<api::ChatRequest>(data) {
        let _ = c.params.check_model("m");
        let _ = c.params.plan(512, &defaults);
        let _ = c.chat_messages();
        let _ = c.logprobs();
    }
    if let Ok(c) = api::parse::<api::CompletionRequest>(data) {
        let _ = c.params.check_model("m");
        if let Ok(plan) = c.params.plan(512, &defaults) {
            assert!(plan.max_tokens.is_none_or(|n| n > 0));
            plan.sampling
                .validate()
                .expect("a plan's sampling parameters are valid");
        }
        let _ = c.logprobs();
    }
    let _ = api::parse::<api::TokenizeRequest>(data);
    let _ = api::parse::<api::DetokenizeRequest>(data);
}

/// The text streamer that turns generated token bytes into SSE text. Input: a stop
/// string, a 0xff byte, then token pieces separated by 0xfe bytes. Checks that the text
/// sent is exactly the bytes' lossy UTF-8 decoding cut before the first stop string.
pub fn text_stream(data: &[u8]) {
    let (stop, tokens) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let stop = String::from_utf8_lossy(stop).into_owned();
    let mut t = TextStream::new(vec![stop.clone()]);
    let mut sent = String::new();
    let mut all = Vec::new();
    for piece in tokens.split(|&b| b == 0xfe) {
        sent.push_str(&t.push(piece));
        all.extend_from_slice(piece);
    }
    sent.push_str(&t.finish());
    let text = String::from_utf8_lossy(&all);
    let want = match text.find(stop.as_str()).filter(|_| !stop.is_empty()) {
        Some(i) => &text[..i],
        None => &text[..],
    };
    assert_eq!(sent, want, "stop {stop:?}");
}

pub fn gguf(data: &[u8]) {
    crate::format::fuzz::gguf(data);
}

pub fn safetensors(data: &[u8]) {
    crate::format::fuzz::safetensors(data);
}

pub fn tokenizer_json(data: &[u8]) {
    crate::format::fuzz::tokenizer_json(data);
}

pub fn sentencepiece(data: &[u8]) {
    crate::format::fuzz::sentencepiece(data);
}

pub fn hf_config(data: &[u8]) {
    crate::format::fuzz::hf_config(data);
}

/// The NPU's xclbin container and the sections onebit reads from it.
pub fn xclbin(data: &[u8]) {
    if let Ok(x) = onebit_drv::xclbin::Xclbin::parse(data) {
        if let Ok(p) = x.aie_partition() {
            let _ = p.primary_pdi();
        }
        let _ = x.ip_layout();
        let _ = x.mem_topology();
    }
}

/// The iGPU's code-object loader: ELF, metadata notes (msgpack), kernel descriptors and
/// relocations, then the loaded image at a base address.
pub fn code_object(data: &[u8]) {
    use onebit_drv::codeobj::{CodeObject, EF_AMDGPU_MACH_GFX1151};
    if let Ok(co) = CodeObject::parse(data, EF_AMDGPU_MACH_GFX1151) {
        let image = co
            .image(0x7f00_0000_0000)
            .expect("a parsed code object loads");
        assert_eq!(image.len() as u64, co.image_size);
    }
}
