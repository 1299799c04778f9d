//! Keeping the password out of everything printed: URLs in errors and logs,
//! and driver messages that might quote it.

/// Where the password sits in `url`, as byte ranges (userinfo and/or the
/// `password=` query parameter).
fn password_ranges(url: &str) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let auth_start = scheme_end + 3;
        let auth_end = url[auth_start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| auth_start + i);
        let at = match url[auth_start..auth_end].rfind('@') {
            Some(i) => Some(auth_start + i),
            // No '@' before the first '/', '?' or '#', but one after: a
            // password holding those characters unencoded (the URL is then
            // malformed, and its error must not show it). Hide up to that '@';
            // hiding too much of an odd URL is the safe mistake.
            None => url[auth_end..].find('@').map(|i| auth_end + i),
        };
        if let Some(at) = at
            && let Some(colon) = url[auth_start..at].find(':')
        {
            ranges.push(auth_start + colon + 1..at);
        }
    }
    if let Some(q) = url.find('?') {
        let mut pos = q + 1;
        for pair in url[q + 1..].split('&') {
            if let Some((k, _)) = pair.split_once('=')
                && k.eq_ignore_ascii_case("password")
            {
                ranges.push(pos + k.len() + 1..pos + pair.len());
            }
            pos += pair.len() + 1;
        }
    }
    ranges
}

/// Returns `url` with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    // Replace from the back so earlier ranges stay valid.
    for range in password_ranges(url).into_iter().rev() {
        out.replace_range(range, "***");
    }
    out
}

/// Removes the URL's password (as written and percent-decoded) from a message.
pub fn scrub(message: &str, url: &str) -> String {
    let mut out = message.to_string();
    for range in password_ranges(url) {
        let raw = &url[range];
        for secret in [raw.to_string(), percent_decode(raw)] {
            if !secret.is_empty() {
                out = out.replace(&secret, "***");
            }
        }
    }
    out
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Checked on bytes: slicing the str at i + 1 could cut a multi-byte
        // character (and the panic message would quote the password).
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
