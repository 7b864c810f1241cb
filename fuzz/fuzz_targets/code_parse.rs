//! Parsing a typed code: six ASCII digits or nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sesame::magic_link::Code;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(code) = Code::parse(&text) {
        assert_eq!(code.as_str().len(), 6);
        assert!(code.as_str().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(Code::parse(code.as_str()), Some(code));
    }
});
