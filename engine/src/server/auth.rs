//! Who may talk to onebitd: the API key, and the `Host` a request names. Both are checked
//! from the request head, before the body is read or `100 Continue` is sent, so an
//! unauthenticated client costs a header's worth of work.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

/// The API key, kept only as a keyed digest: comparing digests takes the same time for
/// every guess, whatever its length and however much of it matches.
pub struct ApiKey {
    /// Two SipHash instances with random per-process keys: 128 bits of digest.
    hashers: [std::collections::hash_map::RandomState; 2],
    digest: [u64; 2],
}

impl ApiKey {
    pub fn new(key: &str) -> Self {
        let hashers = [
            std::collections::hash_map::RandomState::new(),
            std::collections::hash_map::RandomState::new(),
        ];
        let digest = digest(&hashers, key.as_bytes());
        Self { hashers, digest }
    }

    /// Whether `given` is the key.
    pub fn matches(&self, given: &str) -> bool {
        let d = digest(&self.hashers, given.as_bytes());
        // No early exit: every bit of both digests is looked at.
        ((d[0] ^ self.digest[0]) | (d[1] ^ self.digest[1])) == 0
    }
}

fn digest(hashers: &[std::collections::hash_map::RandomState; 2], bytes: &[u8]) -> [u64; 2] {
    hashers.each_ref().map(|h| {
        let mut s = h.build_hasher();
        s.write(bytes);
        s.finish()
    })
}

/// The key a request carries: `Authorization: Bearer KEY` or `X-Api-Key: KEY`.
pub fn given_key<'a>(authorization: Option<&'a str>, x_api_key: Option<&'a str>) -> &'a str {
    authorization
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or(x_api_key)
        .map(str::trim)
        .unwrap_or("")
}

/// Whether a request naming `host` may be served on a TCP connection that arrived at
/// `local`. A page on another site that rebinds its own name to this machine's address
/// (DNS rebinding) sends its own name as `Host`; a name is accepted only when it is
/// `localhost` or listed in `allowed` (`--allowed-host`), and an address only when it is
/// loopback or the one the client connected to. `*` in `allowed` turns the check off. No
/// `Host` at all (HTTP/1.0, raw clients) is accepted: browsers always send one.
pub fn host_allowed(host: Option<&str>, local: Option<IpAddr>, allowed: &[String]) -> bool {
    let Some(host) = host else { return true };
    if allowed.iter().any(|a| a == "*") {
        return true;
    }
    let name = strip_port(host).trim_end_matches('.');
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(ip) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        // A dual-stack listener sees IPv4 clients at IPv4-mapped IPv6 addresses.
        let ip = ip.to_canonical();
        return ip.is_loopback() || Some(ip) == local.map(|l| l.to_canonical());
    }
    allowed.iter().any(|a| {
        strip_port(a)
            .trim_end_matches('.')
            .eq_ignore_ascii_case(name)
    })
}

/// `name:port` → `name`; `[v6]:port` → `[v6]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_only_themselves() {
        let k = ApiKey::new("s3cret");
        assert!(k.matches("s3cret"));
        for wrong in ["", "s3cre", "s3cret ", "s3creT", "s3cret-and-more"] {
            assert!(!k.matches(wrong), "{wrong:?}");
        }
        assert_eq!(given_key(Some("Bearer  abc "), None), "abc");
        assert_eq!(given_key(None, Some("xyz")), "xyz");
        assert_eq!(given_key(Some("Basic abc"), None), "");
    }

    #[test]
    fn hosts_loopback_local_and_listed() {
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        let listed = vec!["api.example.org".to_string()];
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "127.0.0.2",
            "[::1]:8080",
            "192.168.1.5:8080",
            "API.example.org:443",
            "api.example.org.",
        ] {
            assert!(host_allowed(Some(ok), Some(lan), &listed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "192.168.1.6",
            "localhost.evil.example",
            "api.example.org.evil.example",
            "[::2]:80",
        ] {
            assert!(!host_allowed(Some(bad), Some(lan), &listed), "{bad}");
        }
        let mapped: IpAddr = "::ffff:192.168.1.5".parse().unwrap();
        assert!(host_allowed(Some("192.168.1.5:8080"), Some(mapped), &[]));
        assert!(host_allowed(Some("[::ffff:127.0.0.1]"), Some(mapped), &[]));
        assert!(host_allowed(None, None, &[]));
        assert!(host_allowed(Some("evil.example"), None, &["*".into()]));
    }
}
