//! Path normalisation: what passes is what the app gets. A normalised path
//! is absolute, has no empty, `.` or `..` segment, and the encoded form the
//! gateway sends upstream normalises (as the app would read it) to the same
//! path; the Java reading (`;params` cut) is a normalised path too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sesame::path;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = path::normalize(raw) else {
        return;
    };
    assert!(p.starts_with('/'), "{raw:?} -> {p:?}");
    let inner = p.trim_end_matches('/');
    if !inner.is_empty() {
        for seg in inner[1..].split('/') {
            assert!(!seg.is_empty() && seg != "." && seg != "..", "{raw:?} -> {p:?}");
        }
    }
    let wire = path::encode(&p);
    assert_eq!(path::normalize(&wire).as_deref(), Ok(p.as_str()), "{raw:?} -> {p:?} -> {wire:?}");
    if path::has_params(raw) {
        if let Some(java) = path::without_params(raw) {
            assert!(java.starts_with('/'));
            assert!(!java.contains(';'), "{raw:?} -> {java:?}");
        }
    }
    assert!(path::is_under(&p, "/"));
});
