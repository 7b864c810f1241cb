//! Opening a cookie value: anything a browser sends opens to nothing or to
//! what was sealed for that scope, never panics; what is sealed (of a size
//! a cookie of Sesame's can have: values over 1 KiB are never ours) opens
//! again under its own scope only.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sesame::keys::Keys;

fuzz_target!(|data: &[u8]| {
    let Some(keys) = Keys::fixed(&[7u8; 64], &[8u8; 32], vec![9u8; 32]) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let scope = "sesame/session/host/a.example.com";
    let _ = keys.try_open_cookie(scope, &text);
    if text.len() > 600 {
        return;
    }
    let sealed = keys.seal_cookie(scope, &text);
    assert_eq!(keys.open_cookie(scope, &sealed).as_deref(), Some(&*text));
    assert_eq!(keys.open_cookie("sesame/session/host/b.example.com", &sealed), None);
});
