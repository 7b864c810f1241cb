//! Return-to (`rd`) parsing: whatever is asked for, the person lands on a
//! configured site.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sesame::config::Config;
use sesame::return_to::ReturnTo;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static CONFIG: Config = Config::from_toml(
            "[[site]]\npublic_url = \"https://a.example.com\"\nupstream = [\"127.0.0.1:1\"]\n\
             [[site]]\npublic_url = \"https://b.example.com:8443\"\nupstream = [\"127.0.0.1:1\"]\n",
        )
        .expect("fuzz config");
    }
    let text = String::from_utf8_lossy(data);
    CONFIG.with(|c| {
        let rd = ReturnTo::parse(&text, &c.sites[0], &c.sites);
        let url = url::Url::parse(rd.as_str()).expect("a return-to is a URL");
        let origin = url.origin().ascii_serialization();
        assert!(c.sites.iter().any(|s| s.origin == origin), "{text:?} -> {}", rd.as_str());
        assert!(url.username().is_empty() && url.password().is_none(), "{text:?} -> {}", rd.as_str());
    });
});
