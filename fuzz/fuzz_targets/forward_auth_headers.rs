//! The forward-auth header reader: from any set of headers a trusted proxy
//! passes on, the answer is the one value of the chosen family's header, and
//! never a value the other family contradicts.
#![no_main]
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sesame::config::ForwardAuthHeaders;
use sesame::forward_auth::read_original;

fn headers(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(i) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..i], &line[i + 1..]);
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value.trim_ascii()))
        else {
            continue;
        };
        h.append(name, value);
    }
    h
}

fn only<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let mut all = h.get_all(name).into_iter();
    let first = all.next()?;
    assert!(all.next().is_none(), "{name} twice was accepted");
    Some(first.as_bytes())
}

fuzz_target!(|data: &[u8]| {
    let h = headers(data);
    for (family, ours, theirs) in [
        (ForwardAuthHeaders::XForwarded, "x-forwarded-uri", "x-original-uri"),
        (ForwardAuthHeaders::XOriginal, "x-original-uri", "x-forwarded-uri"),
    ] {
        let _ = read_original(&h, false, family);
        if let Ok(o) = read_original(&h, true, family) {
            assert_eq!(only(&h, ours), Some(o.uri.as_bytes()));
            if let Some(other) = only(&h, theirs) {
                assert_eq!(other, o.uri.as_bytes());
            }
        }
    }
});
