//! Email parsing: what passes has one `@`, no whitespace or control
//! character (it goes into a header and an SMTP envelope), and parses again
//! to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sesame::email::Email;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(e) = Email::parse(&text) {
        let s = e.as_str();
        assert_eq!(s.matches('@').count(), 1, "{s:?}");
        assert!(!s.chars().any(|c| c.is_control() || c.is_whitespace()), "{s:?}");
        assert!(!s.contains(['<', '>', ',', ';', '"', '\r', '\n']), "{s:?}");
        assert_eq!(Email::parse(s).as_ref(), Ok(&e));
    }
});
