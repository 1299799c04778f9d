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
    // A `password` parameter after any '?' or '&', not only in the query
    // that starts at the first '?': an unencoded '?' in the userinfo's
    // password would move that start past the parameter.
    for (i, _) in url.match_indices(['?', '&']) {
        let start = i + 1;
        let end = url[start..].find('&').map_or(url.len(), |j| start + j);
        if let Some((k, _)) = url[start..end].split_once('=')
            && k.eq_ignore_ascii_case("password")
        {
            ranges.push(start + k.len() + 1..end);
        }
    }
    ranges
}

/// Returns `url` with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    hide(url, password_ranges(url))
}

/// Removes the URL's password (as written and percent-decoded) from a message.
/// A `password` parameter's range runs to the end of the URL, fragment
/// included (an unencoded '#' may belong to the password); the driver reads
/// the value only up to the '#', so that part is removed too.
pub fn scrub(message: &str, url: &str) -> String {
    let mut secrets = Vec::new();
    for range in password_ranges(url) {
        let raw = &url[range];
        let before_fragment = raw.split('#').next().unwrap_or(raw);
        secrets.extend([
            raw.to_string(),
            percent_decode(raw),
            before_fragment.to_string(),
            percent_decode(before_fragment),
        ]);
    }
    // Every occurrence found in the message as given, then hidden at once:
    // replacing one secret after another let a short one (an odd URL's
    // spurious range, such as a lone ':') cut up a longer one first.
    let mut found = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        found.extend(
            message
                .match_indices(secret.as_str())
                .map(|(i, _)| i..i + secret.len()),
        );
    }
    hide(message, found)
}

/// `text` with each of `ranges` (char boundaries; overlapping allowed)
/// replaced by `***`, overlapping and touching ones as one.
fn hide(text: &str, mut ranges: Vec<std::ops::Range<usize>>) -> String {
    // Overlapping ranges merged (a userinfo password typed with a '/' can
    // run into the query and its `password` parameter), then replaced from
    // the back so earlier ranges stay valid.
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<usize>> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let mut out = text.to_string();
    for range in merged.into_iter().rev() {
        out.replace_range(range, "***");
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
