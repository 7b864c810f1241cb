//! The config loader: any file is a config or a list of errors naming keys,
//! never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = sesame::config::Config::from_toml(text) {
        assert!(!errors.to_string().is_empty());
    }
});
