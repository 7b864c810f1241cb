//! Request-path normalisation, so that path rules cannot be skipped by
//! spelling a path differently (`/public/../admin`, `/%2e%2e/`, `//`).
//!
//! Apps read paths differently: Java servers (Tomcat, Jetty) cut `;params`
//! off every segment before resolving `..` (`/public/..;/admin` is their
//! `/admin`), IIS and other servers ignore case (`/Admin` is `/admin`).
//! So a path with `;` ([`without_params`]) or upper-case letters
//! ([`is_under_ignoring_case`]) is also read the way such an app would, and
//! the policy takes the stricter answer of the two readings. Query strings
//! are never part of a path.

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousPath;

/// Decode percent-escapes once, merge duplicate slashes and resolve `.` and
/// `..` segments. A path that is not valid UTF-8 after decoding, that holds a
/// NUL or a backslash, or whose decoding still contains a `%`-escape
/// (double encoding) is refused as ambiguous.
pub fn normalize(raw: &str) -> Result<String, AmbiguousPath> {
    resolve(&decode(raw)?, false)
}

/// True if the path (not the query) holds `;`, plainly or as `%3B`.
pub fn has_params(raw: &str) -> bool {
    let path = raw.split(['?', '#']).next().unwrap_or("").as_bytes();
    path.contains(&b';') || path.windows(3).any(|w| w.eq_ignore_ascii_case(b"%3b"))
}

/// The path as Java servers read it: `;params` cut off each segment before
/// `.` and `..` are resolved (`/public/..;/admin` is `/admin`). `None` if the
/// path is ambiguous (then [`normalize`] refuses it too).
pub fn without_params(raw: &str) -> Option<String> {
    resolve(&decode(raw).ok()?, true).ok()
}

fn decode(raw: &str) -> Result<std::borrow::Cow<'_, str>, AmbiguousPath> {
    let raw = raw.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| AmbiguousPath)?;
    if decoded.contains(['\0', '\\']) || has_escape(&decoded) {
        return Err(AmbiguousPath);
    }
    Ok(decoded)
}

/// Merge duplicate slashes and resolve `.` and `..` in a decoded path,
/// cutting `;params` off each segment first when `cut_params`.
fn resolve(decoded: &str, cut_params: bool) -> Result<String, AmbiguousPath> {
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        let seg = match cut_params {
            true => seg.split(';').next().unwrap_or(""),
            false => seg,
        };
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len() + 1);
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || (decoded.ends_with('/') && !out.is_empty()) {
        path.push('/');
    }
    Ok(path)
}

fn has_escape(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// What may stay unescaped in a path sent upstream (RFC 3986 `pchar` and
/// `/`); everything else is percent-encoded.
const PATH_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A normalised path as it goes on the wire again.
pub fn encode(normalised: &str) -> String {
    percent_encoding::utf8_percent_encode(normalised, PATH_ESCAPE).to_string()
}

/// True if `path` (normalised) is `prefix` or lies below it.
pub fn is_under(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let prefix = prefix.trim_end_matches('/');
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// [`is_under`], ignoring ASCII case.
pub fn is_under_ignoring_case(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let (path, prefix) = (path.as_bytes(), prefix.trim_end_matches('/').as_bytes());
    path.len() >= prefix.len()
        && path[..prefix.len()].eq_ignore_ascii_case(prefix)
        && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_dot_segments_and_slashes() {
        assert_eq!(normalize("/public/../admin").unwrap(), "/admin");
        assert_eq!(normalize("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalize("/public/%2E%2E/admin").unwrap(), "/admin");
        assert_eq!(normalize("//public//x").unwrap(), "/public/x");
        assert_eq!(normalize("/a/./b/").unwrap(), "/a/b/");
        assert_eq!(normalize("/../../").unwrap(), "/");
        assert_eq!(normalize("/health?x=/../admin").unwrap(), "/health");
    }

    #[test]
    fn refuses_ambiguous() {
        assert!(normalize("/a%252e%252e/").is_err());
        assert!(normalize("/a\\..\\b").is_err());
        assert!(normalize("/a%5c..%5cb").is_err());
        assert!(normalize("/a%00").is_err());
        assert!(normalize("/a%ff").is_err());
    }

    #[test]
    fn encodes_back_for_the_wire() {
        assert_eq!(
            encode(&normalize("/a/%2e%2e/b%20c/%C3%A9").unwrap()),
            "/b%20c/%C3%A9"
        );
        assert_eq!(encode(&normalize("/a//b/./c").unwrap()), "/a/b/c");
        assert_eq!(encode("/x?y#z"), "/x%3Fy%23z");
    }

    #[test]
    fn prefix_matches_at_segment_boundary() {
        assert!(is_under("/health", "/health"));
        assert!(is_under("/health/live", "/health"));
        assert!(is_under("/static/x.css", "/static/"));
        assert!(!is_under("/healthz", "/health"));
        assert!(!is_under("/Health", "/health"));
        assert!(is_under_ignoring_case("/Health/x", "/health"));
        assert!(is_under_ignoring_case("/ADMIN", "/admin/"));
        assert!(!is_under_ignoring_case("/Healthz", "/health"));
    }

    #[test]
    fn the_java_reading_cuts_params_before_dot_segments() {
        assert_eq!(normalize("/public/..;/admin").unwrap(), "/public/..;/admin");
        assert_eq!(
            without_params("/public/..;/admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(
            without_params("/public/..%3Bx/admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(without_params("/admin;x/y").as_deref(), Some("/admin/y"));
        // `.;` is `.` to such a server, so the `..` after it goes one further.
        assert_eq!(normalize("/open/.;/../admin").unwrap(), "/open/admin");
        assert_eq!(
            without_params("/open/.;/../admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(
            without_params("/app/page;jsessionid=1").as_deref(),
            Some("/app/page")
        );
        assert!(has_params("/a;b") && has_params("/a%3bb") && has_params("/a%3Bb"));
        assert!(
            !has_params("/plain/Path") && !has_params("/x?q=;"),
            "the query is not the path"
        );
    }
}
