//! Turning generated token bytes into text that is safe to send: never half a UTF-8
//! sequence, never a prefix of a stop string that might still complete, and nothing from
//! a stop string on (llama.cpp's `find_partial_stop_string`, done here on whole text).

/// The text pipeline of one generation.
#[derive(Debug, Default)]
pub struct TextStream {
    /// Bytes of an incomplete UTF-8 sequence at the end of the output so far.
    bytes: Vec<u8>,
    /// Decoded text held back because it may be the start of a stop string.
    held: String,
    stops: Vec<String>,
    stopped: bool,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Self::default()
        }
    }

    /// True once a stop string matched; later input is ignored.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds a token's bytes and returns the text that can be sent now.
    pub fn push(&mut self, token_bytes: &[u8]) -> String {
        if self.stopped {
            return String::new();
        }
        self.bytes.extend_from_slice(token_bytes);
        let text = take_utf8(&mut self.bytes, false);
        self.held.push_str(&text);
        self.release()
    }

    /// Ends the stream (EOS or a limit) and returns all that was held back: a partial
    /// stop-string match is real text after all, and a truncated UTF-8 sequence
    /// becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let text = take_utf8(&mut self.bytes, true);
        self.held.push_str(&text);
        let out = self.release();
        self.stopped = true;
        out + &std::mem::take(&mut self.held)
    }

    fn release(&mut self) -> String {
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            self.held.truncate(at);
            return std::mem::take(&mut self.held);
        }
        let keep = self
            .stops
            .iter()
            .map(|s| partial_suffix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let rest = self.held.split_off(cut);
        std::mem::replace(&mut self.held, rest)
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `stop`, cut on a
/// char boundary of `text`.
fn partial_suffix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop
                    .as_bytes()
                    .starts_with(&text.as_bytes()[text.len() - n..])
        })
        .unwrap_or(0)
}

/// Removes and returns the valid UTF-8 text at the start of `buf`; invalid bytes become
/// U+FFFD. A sequence cut off at the end stays in `buf` unless `flush`.
fn take_utf8(buf: &mut Vec<u8>, flush: bool) -> String {
    let mut out = String::new();
    let mut rest: &[u8] = buf;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (ok, tail) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(ok).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        rest = &tail[n..];
                    }
                    None if flush => {
                        out.push('\u{FFFD}');
                        rest = &[];
                        break;
                    }
                    None => {
                        rest = tail;
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.len();
    buf.drain(..buf.len() - keep);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(pieces: &[&[u8]], stops: &[&str]) -> (Vec<String>, bool) {
        let mut t = TextStream::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out: Vec<String> = pieces.iter().map(|p| t.push(p)).collect();
        let stopped = t.stopped();
        out.push(t.finish());
        (out, stopped)
    }

    #[test]
    fn holds_partial_utf8() {
        let e = "é".as_bytes();
        let (out, _) = run(&[b"a", &e[..1], &e[1..], b"b"], &[]);
        assert_eq!(out, ["a", "", "é", "b", ""]);
    }

    #[test]
    fn holds_partial_stop_then_releases() {
        let (out, stopped) = run(&[b"Hello", b" wor", b"ld"], &["worm"]);
        assert!(!stopped);
        assert_eq!(out, ["Hello", " ", "world", ""]);
        let (out, stopped) = run(&[b"Hello", b" wor", b"m and more"], &["worm"]);
        assert!(stopped);
        assert_eq!(out.concat(), "Hello ");
    }

    #[test]
    fn truncated_utf8_at_end_becomes_replacement() {
        let (out, _) = run(&[b"x", &[0xe2, 0x82]], &[]);
        assert_eq!(out.concat(), "x\u{FFFD}");
        let (out, _) = run(&[&[0xff, b'a']], &[]);
        assert_eq!(out.concat(), "\u{FFFD}a");
    }

    proptest! {
        /// However the bytes are split into tokens, the pieces are whole UTF-8 strings and
        /// join to the text up to the first stop string.
        #[test]
        fn any_split_gives_text_before_stop(text in "[ab é€\u{1F600}]{0,40}", stop in "[ab é]{1,4}", cuts in proptest::collection::vec(0usize..200, 0..12)) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            let (out, _) = run(&pieces, &[&stop]);
            let want = match text.find(&stop) { Some(i) => &text[..i], None => &text[..] };
            prop_assert_eq!(out.concat(), want);
        }
    }
}
