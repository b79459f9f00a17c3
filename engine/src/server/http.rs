//! A small HTTP/1.1 implementation: just what an OpenAI-style API needs (request line,
//! headers, `Content-Length` or chunked bodies, `Expect: 100-continue`, keep-alive,
//! chunked responses for SSE). Every read has a deadline and every size has a limit, so a
//! slow or hostile client costs one thread for a bounded time and nothing more.

use super::listen::Conn;
use std::io::{self, BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// What requests are read from: buffered bytes whose read deadline can be set, and which
/// can take the interim `100 Continue`. A socket in the daemon; bytes in memory for the
/// fuzz targets, so that they run the same parser without a syscall per read.
pub trait Source: BufRead {
    /// Bounds the next read's wait (None: no bound).
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// Sends `bytes` to the client at once (an interim response).
    fn reply(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl Source for BufReader<Conn> {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.get_ref().set_read_timeout(t)
    }

    fn reply(&mut self, bytes: &[u8]) -> io::Result<()> {
        let w = self.get_mut();
        w.write_all(bytes)?;
        w.flush()
    }
}

/// Limits applied while reading one request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Request line plus headers.
    pub max_head: usize,
    pub max_headers: usize,
    pub max_body: usize,
    /// How long an idle keep-alive connection may wait for its next request.
    pub idle: Duration,
    /// How long a request may take to arrive once its first byte has.
    pub request: Duration,
    /// How long one connection may take new requests: a keep-alive connection older
    /// than this is closed after its current request.
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head: 16 * 1024,
            max_headers: 64,
            max_body: 4 << 20,
            idle: Duration::from_secs(30),
            request: Duration::from_secs(30),
            lifetime: Duration::from_secs(600),
        }
    }
}

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection may serve another request after this one.
    pub keep_alive: bool,
    /// HTTP/1.1 (else 1.0, which has no chunked encoding).
    pub http11: bool,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why no request could be read. `Closed` and `Idle` end the connection quietly; the
/// others get a 4xx answer (the status is given) and then end it.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection between requests.
    Closed,
    /// No request started within the idle timeout.
    Idle,
    /// A malformed or over-limit request: (status, message for the client).
    Bad(u16, String),
    /// A socket error or a timeout in the middle of a request.
    Io(io::Error),
}

fn bad(status: u16, msg: impl Into<String>) -> ReadError {
    ReadError::Bad(status, msg.into())
}

/// Sets the socket read timeout to what is left of `deadline` before each read.
fn arm(conn: &impl Source, deadline: Instant) -> Result<(), ReadError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ReadError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "request took too long to arrive",
        )));
    }
    conn.set_read_timeout(Some(left)).map_err(ReadError::Io)
}

/// Reads one line ending in `\n` of at most `budget` bytes (the line counts against it),
/// without its line ending.
fn read_line(
    r: &mut impl Source,
    budget: &mut usize,
    deadline: Instant,
) -> Result<Vec<u8>, ReadError> {
    let mut line = read_raw_line(r, budget, deadline)?;
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(line)
}

/// Reads one line of at most `budget` bytes, its `\n` included.
fn read_raw_line(
    r: &mut impl Source,
    budget: &mut usize,
    deadline: Instant,
) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    loop {
        arm(r, deadline)?;
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if buf.is_empty() {
            return Err(ReadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-request",
            )));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if take > *budget {
            return Err(bad(431, "request line or headers too large"));
        }
        *budget -= take;
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(line);
        }
    }
}

/// Waits up to `limits.idle` for the first byte of the next request.
fn wait_first_byte(r: &mut impl Source, idle: Duration) -> Result<(), ReadError> {
    r.set_read_timeout(Some(idle)).map_err(ReadError::Io)?;
    loop {
        match r.fill_buf() {
            Ok([]) => return Err(ReadError::Closed),
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::Idle)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(ReadError::Closed),
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Reads the next request from `r`. Answers `Expect: 100-continue` itself.
pub fn read_request(r: &mut impl Source, limits: &Limits) -> Result<Request, ReadError> {
    let head = read_head(r, limits, limits.idle)?;
    read_body(r, head, limits)
}

/// A request whose head is read and whose body is not: the caller checks the head (the
/// API key, the Host) before it lets the client send the body.
#[derive(Debug)]
pub struct Head {
    /// The request, body still empty.
    pub req: Request,
    chunked: bool,
    length: Option<u64>,
    deadline: Instant,
}

/// Reads a request line and headers, waiting up to `idle` for the first byte; checks the
/// body's framing and announced size but reads none of it. The lines are gathered here
/// (where the size limit and the deadline apply) and parsed by `httparse`, hyper's
/// parser: it allows only token characters in methods and header names and no control
/// bytes (a bare CR included) in the target and header values, which a proxy in front
/// might read otherwise.
pub fn read_head(r: &mut impl Source, limits: &Limits, idle: Duration) -> Result<Head, ReadError> {
    wait_first_byte(r, idle)?;
    let deadline = Instant::now() + limits.request;
    let mut budget = limits.max_head;
    let blank = |l: &[u8]| matches!(l, b"\n" | b"\r\n");
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let mut raw = read_raw_line(r, &mut budget, deadline)?;
    while blank(&raw) {
        raw = read_raw_line(r, &mut budget, deadline)?;
    }
    loop {
        let line = read_raw_line(r, &mut budget, deadline)?;
        raw.extend_from_slice(&line);
        if blank(&line) {
            break;
        }
    }
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut head = httparse::Request::new(&mut slots);
    match head.parse(&raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad(400, "incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(bad(
                431,
                format!("more than {} headers", limits.max_headers),
            ))
        }
        Err(httparse::Error::Version) => {
            return Err(bad(505, "unsupported HTTP version; use HTTP/1.1"))
        }
        Err(e) => return Err(bad(400, format!("malformed request head: {e}"))),
    }
    let (Some(method), Some(target), Some(version)) = (head.method, head.path, head.version) else {
        return Err(bad(400, "incomplete request line"));
    };
    let http11 = version == 1;
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad(400, "malformed method"));
    }
    if !target.starts_with('/') {
        return Err(bad(400, "request target must be an absolute path"));
    }
    let path = target.split('?').next().unwrap_or("/").to_string();
    let mut headers = Vec::with_capacity(head.headers.len());
    for h in head.headers.iter() {
        let v = std::str::from_utf8(h.value).map_err(|_| {
            bad(
                400,
                format!("header {:?} is not UTF-8", truncate(h.name, 40)),
            )
        })?;
        headers.push((h.name.to_string(), v.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path,
        headers,
        body: Vec::new(),
        keep_alive: http11,
        http11,
    };
    if let Some(c) = req.header("connection") {
        let c = c.to_ascii_lowercase();
        if c.contains("close") {
            req.keep_alive = false;
        } else if c.contains("keep-alive") {
            req.keep_alive = true;
        }
    }

    let (chunked, length) = body_framing(&req)?;
    if let Some(n) = length {
        if n > limits.max_body as u64 {
            return Err(bad(
                413,
                format!(
                    "request body of {n} bytes is over the limit of {} bytes",
                    limits.max_body
                ),
            ));
        }
    }
    Ok(Head {
        req,
        chunked,
        length,
        deadline,
    })
}

/// Reads the body of a request whose head passed its checks, first sending
/// `100 Continue` when the client waits for it.
pub fn read_body(r: &mut impl Source, head: Head, limits: &Limits) -> Result<Request, ReadError> {
    let Head {
        mut req,
        chunked,
        length,
        deadline,
    } = head;
    let expects_body = chunked || length.is_some_and(|n| n > 0);
    if expects_body
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        r.reply(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(ReadError::Io)?;
    }
    if chunked {
        req.body = read_chunked(r, limits.max_body, deadline)?;
    } else if let Some(n) = length {
        req.body = vec![0; n as usize];
        let mut got = 0;
        while got < req.body.len() {
            arm(r, deadline)?;
            match r.read(&mut req.body[got..]) {
                Ok(0) => {
                    return Err(ReadError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "body shorter than Content-Length",
                    )))
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
    Ok(req)
}

/// How the body is framed: (chunked, Content-Length). RFC 9112 §6.3: a request with both
/// `Transfer-Encoding` and `Content-Length`, or with several lengths, could be framed one
/// way here and another way by a proxy in front (request smuggling), so it is refused.
fn body_framing(req: &Request) -> Result<(bool, Option<u64>), ReadError> {
    let named = |name: &str| {
        req.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let te = named("transfer-encoding");
    let cl = named("content-length");
    if te.len() > 1 || cl.len() > 1 {
        return Err(bad(
            400,
            "more than one Transfer-Encoding or Content-Length header; send exactly one",
        ));
    }
    if !te.is_empty() && !cl.is_empty() {
        return Err(bad(
            400,
            "both Transfer-Encoding and Content-Length; send only one of them",
        ));
    }
    let chunked = match te.first() {
        None => false,
        Some(te) if te.eq_ignore_ascii_case("chunked") => true,
        Some(te) => {
            return Err(bad(
                501,
                format!(
                    "unsupported Transfer-Encoding {:?}; send chunked or Content-Length",
                    truncate(te, 40)
                ),
            ))
        }
    };
    let length = match cl.first() {
        None => None,
        // Digits only: `u64::from_str` would also take "+16".
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            Some(v.parse::<u64>().unwrap_or(u64::MAX))
        }
        Some(v) => {
            return Err(bad(
                400,
                format!("invalid Content-Length {:?}", truncate(v, 40)),
            ))
        }
    };
    Ok((chunked, length))
}

fn read_chunked(r: &mut impl Source, max: usize, deadline: Instant) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let mut budget = 1024;
        let line = read_line(r, &mut budget, deadline)?;
        let line = std::str::from_utf8(&line).map_err(|_| bad(400, "malformed chunk size"))?;
        let hex = line.split(';').next().unwrap_or("").trim();
        // Hex digits only (`from_str_radix` would also take a sign).
        let n = Some(hex)
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad(400, format!("malformed chunk size {:?}", truncate(hex, 20))))?;
        if n == 0 {
            // Trailers, then the empty line.
            loop {
                let mut budget = 8192;
                if read_line(r, &mut budget, deadline)?.is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len().checked_add(n).is_none_or(|total| total > max) {
            return Err(bad(
                413,
                format!("request body is over the limit of {max} bytes"),
            ));
        }
        let start = body.len();
        body.resize(start + n, 0);
        let mut got = start;
        while got < body.len() {
            arm(r, deadline)?;
            match r.read(&mut body[got..]) {
                Ok(0) => {
                    return Err(ReadError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-chunk",
                    )))
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        let mut budget = 2;
        if !read_line(r, &mut budget, deadline)?.is_empty() {
            return Err(bad(400, "chunk data longer than its size"));
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A complete response with a `Content-Length` body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Self {
        let mut body = serde_json::to_vec(v).unwrap_or_default();
        body.push(b'\n');
        Self {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    pub fn text(status: u16, content_type: &'static str, body: String) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn write_to(&self, w: &mut impl Write, keep_alive: bool) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        w.write_all(&out)?;
        w.flush()
    }
}

/// A streamed response body, for SSE: `Transfer-Encoding: chunked` for HTTP/1.1 clients;
/// for HTTP/1.0 clients the bytes as they are, ended by closing the connection.
pub struct Chunked<'a, W: Write> {
    w: &'a mut W,
    chunked: bool,
}

impl<'a, W: Write> Chunked<'a, W> {
    /// Writes the head of a 200 response of `content_type` and returns the body writer.
    /// Without `http11` the connection cannot be kept alive afterwards.
    pub fn start(
        w: &'a mut W,
        content_type: &str,
        keep_alive: bool,
        http11: bool,
    ) -> io::Result<Self> {
        let framing = if http11 {
            "Transfer-Encoding: chunked\r\n"
        } else {
            ""
        };
        let conn = if keep_alive && http11 {
            "keep-alive"
        } else {
            "close"
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\n{framing}X-Accel-Buffering: no\r\nConnection: {conn}\r\n\r\n"
        );
        w.write_all(head.as_bytes())?;
        w.flush()?;
        Ok(Self { w, chunked: http11 })
    }

    /// The underlying writer (for checks that only look at it).
    pub fn inner(&self) -> &W {
        self.w
    }

    /// Sends `data` as one chunk and flushes it to the client.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.chunked {
            self.w.write_all(data)?;
            return self.w.flush();
        }
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        self.w.write_all(&out)?;
        self.w.flush()
    }

    pub fn finish(self) -> io::Result<()> {
        if self.chunked {
            self.w.write_all(b"0\r\n\r\n")?;
        }
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn parse(raw: &[u8], limits: Limits) -> (Result<Request, ReadError>, Vec<u8>) {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(raw).unwrap();
        b.shutdown(std::net::Shutdown::Write).unwrap();
        let mut r = BufReader::new(Conn::Unix(a));
        let res = read_request(&mut r, &limits);
        drop(r);
        let mut echoed = Vec::new();
        b.read_to_end(&mut echoed).unwrap();
        (res, echoed)
    }

    /// The default limits: every input here is written whole before it is read, so no
    /// case waits for a deadline and none may depend on one (a loaded machine).
    fn quick() -> Limits {
        Limits::default()
    }

    #[test]
    fn parses_body_and_headers() {
        let raw = b"POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n{}xy";
        let (r, _) = parse(raw, quick());
        let r = r.unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/completions");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, b"{}xy");
        assert!(r.keep_alive);
    }

    #[test]
    fn chunked_body_and_continue() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n";
        let (r, echoed) = parse(raw, quick());
        assert_eq!(r.unwrap().body, b"abcde");
        assert_eq!(echoed, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn limits_give_statuses() {
        let mut l = quick();
        l.max_body = 10;
        let (r, _) = parse(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", l);
        assert!(matches!(r, Err(ReadError::Bad(413, _))));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20000));
        assert!(matches!(
            parse(long.as_bytes(), quick()).0,
            Err(ReadError::Bad(431, _))
        ));
        assert!(matches!(
            parse(b"GET / HTTP/2.0\r\n\r\n", quick()).0,
            Err(ReadError::Bad(505, _))
        ));
        assert!(matches!(
            parse(b"garbage\r\n\r\n", quick()).0,
            Err(ReadError::Bad(400, _))
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", quick()).0,
            Err(ReadError::Bad(400, _))
        ));
        assert!(matches!(parse(b"", quick()).0, Err(ReadError::Closed)));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", quick()).0,
            Err(ReadError::Io(_))
        ));
        let (r, _) = parse(b"GET / HTTP/1.0\r\n\r\n", quick());
        assert!(!r.unwrap().keep_alive);
    }

    /// Ways to make two parsers disagree on where a body ends (request smuggling): each
    /// is refused with a 4xx, which ends the connection.
    #[test]
    fn ambiguous_framing_is_refused() {
        let body = "{\"content\":\"ab\"}";
        for (what, head) in [
            ("signed length", "Content-Length: +16\r\n"),
            ("spaced digits", "Content-Length: 1 6\r\n"),
            (
                "duplicate length",
                "Content-Length: 16\r\nContent-Length: 16\r\n",
            ),
            ("listed length", "Content-Length: 16, 16\r\n"),
            (
                "length and chunked",
                "Content-Length: 16\r\nTransfer-Encoding: chunked\r\n",
            ),
            (
                "duplicate transfer-encoding",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            ),
        ] {
            let raw = format!("POST / HTTP/1.1\r\n{head}\r\n{body}");
            let (r, _) = parse(raw.as_bytes(), quick());
            assert!(matches!(r, Err(ReadError::Bad(400, _))), "{what}: {r:?}");
        }
    }

    /// Bytes a proxy in front may read differently (a bare CR as a line end, a NUL, a
    /// name that is no token) are refused, not passed on as part of a header.
    #[test]
    fn control_bytes_and_non_token_names_in_the_head_are_refused() {
        for (what, head) in [
            ("bare CR in a value", &b"X-A: 1\rContent-Length: 3\r\n"[..]),
            ("NUL in a value", b"X-A: 1\x002\r\n"),
            ("NUL in a name", b"Content-Length\x00: 3\r\n"),
            ("parenthesis in a name", b"X(A): 1\r\n"),
            (
                "vertical tab before the colon",
                b"Content-Length\x0b: 3\r\n",
            ),
            ("folded line", b"X-A: 1\r\n  folded\r\n"),
        ] {
            let mut raw = b"POST / HTTP/1.1\r\n".to_vec();
            raw.extend_from_slice(head);
            raw.extend_from_slice(b"\r\nabc");
            let (r, _) = parse(&raw, quick());
            assert!(matches!(r, Err(ReadError::Bad(400, _))), "{what}: {r:?}");
        }
        let (r, _) = parse(b"GET /a\x01b HTTP/1.1\r\n\r\n", quick());
        assert!(
            matches!(r, Err(ReadError::Bad(400, _))),
            "control byte in the target: {r:?}"
        );
        // Bare LF line ends and empty lines before the request line are still fine.
        let (r, _) = parse(b"\r\n\nGET /x HTTP/1.1\nHost: a\n\n", quick());
        assert_eq!(r.unwrap().header("host"), Some("a"));
    }

    /// Chunk sizes whose sum wraps around must not slip under the body limit.
    #[test]
    fn chunk_sizes_that_overflow_are_refused() {
        let raw =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n";
        let (r, _) = parse(raw, quick());
        assert!(matches!(r, Err(ReadError::Bad(413, _))), "{r:?}");
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n";
        let (r, _) = parse(raw, quick());
        assert!(matches!(r, Err(ReadError::Bad(_, _))), "{r:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever bytes arrive, the parser answers with a request or an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(head in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                                       tail in "[a-zA-Z0-9:\r\n -]{0,200}") {
            let mut raw = head;
            raw.extend_from_slice(tail.as_bytes());
            let mut l = quick();
            l.max_body = 64;
            let _ = parse(&raw, l);
            let mut framed = b"POST / HTTP/1.1\r\n".to_vec();
            framed.extend_from_slice(tail.as_bytes());
            let _ = parse(&framed, l);
        }
    }

    #[test]
    fn chunked_response_framing() {
        let mut out = Vec::new();
        let mut c = Chunked::start(&mut out, "text/event-stream", true, true).unwrap();
        c.send(b"data: x\n\n").unwrap();
        c.send(b"").unwrap();
        c.finish().unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(
            s.ends_with("\r\n\r\n9\r\ndata: x\n\n\r\n0\r\n\r\n"),
            "{s:?}"
        );
    }
}
