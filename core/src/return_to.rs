//! `ReturnTo`: where to send a person after they sign in (`rd`).
//!
//! Only an address on a configured site survives parsing; everything else,
//! including every trick in an open-redirect corpus (`//evil`, `/\evil`,
//! `https:evil`, encoded, whitespace and userinfo forms), becomes the root of
//! the site the person is on. This module does not decide access.

use percent_encoding::percent_decode_str;
use url::Url;

use crate::config::Site;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnTo(String);

impl ReturnTo {
    /// The root of `site`.
    pub fn root(site: &Site) -> ReturnTo {
        ReturnTo(site.public_url.as_str().to_string())
    }

    /// Parse a return-to value given on `site`; `sites` are all configured sites.
    pub fn parse(raw: &str, site: &Site, sites: &[Site]) -> ReturnTo {
        Self::try_parse(raw, site, sites).unwrap_or_else(|| Self::root(site))
    }

    fn try_parse(raw: &str, site: &Site, sites: &[Site]) -> Option<ReturnTo> {
        // 4 KiB: room for a portal's sign-in address, which carries a
        // site's own `rd` (up to half that, once encoded) inside it.
        if raw.is_empty() || raw.len() > 4096 || suspicious(raw) {
            return None;
        }
        // Look through up to three layers of percent-encoding for the same tricks.
        let mut layer = raw.to_string();
        for _ in 0..3 {
            let decoded = percent_decode_str(&layer).decode_utf8().ok()?.into_owned();
            if suspicious(&decoded) {
                return None;
            }
            if decoded == layer {
                break;
            }
            layer = decoded;
        }
        let url = if raw.starts_with('/') {
            site.public_url.join(raw).ok()?
        } else {
            Url::parse(raw).ok()?
        };
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return None;
        }
        let origin = url.origin().ascii_serialization();
        sites.iter().find(|s| s.origin == origin)?;
        Some(ReturnTo(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Forms that browsers or URL parsers may read as another host.
fn suspicious(s: &str) -> bool {
    s.starts_with("//")
        || s.starts_with("/\\")
        || s.contains('\\')
        || s.chars().any(|c| c.is_control() || c.is_whitespace())
        || (!s.starts_with('/') && !s.starts_with("http://") && !s.starts_with("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn sites() -> Vec<Site> {
        Config::from_toml(
            r#"
            [[site]]
            public_url = "https://wiki.example.com"
            upstream = ["127.0.0.1:3000"]
            [[site]]
            public_url = "https://git.example.com"
            upstream = ["127.0.0.1:3001"]
            "#,
        )
        .unwrap()
        .sites
    }

    #[test]
    fn keeps_paths_and_configured_sites() {
        let s = sites();
        assert_eq!(
            ReturnTo::parse("/page?x=1#top", &s[0], &s).as_str(),
            "https://wiki.example.com/page?x=1#top"
        );
        assert_eq!(
            ReturnTo::parse("https://git.example.com/repo", &s[0], &s).as_str(),
            "https://git.example.com/repo"
        );
    }

    #[test]
    fn everything_else_goes_to_root() {
        let s = sites();
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "https:evil.com",
            "https://evil.com",
            "https://wiki.example.com@evil.com",
            "https://user@wiki.example.com/",
            "/%2f%2fevil.com",
            "/%252f%252fevil.com",
            " /x",
            "/\tx",
            "javascript:alert(1)",
            "evil.com",
            "http://wiki.example.com/",
        ] {
            assert_eq!(
                ReturnTo::parse(bad, &s[0], &s).as_str(),
                "https://wiki.example.com/",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn open_redirect_corpus_stays_on_site() {
        let s = sites();
        let corpus = include_str!("../../tests/data/openredirects.txt");
        let mut n = 0;
        for line in corpus.lines() {
            let to = ReturnTo::parse(line, &s[0], &s);
            let url = Url::parse(to.as_str()).unwrap();
            assert!(
                s.iter()
                    .any(|site| site.origin == url.origin().ascii_serialization()),
                "{line:?} -> {}",
                to.as_str()
            );
            n += 1;
        }
        assert_eq!(n, 559);
    }
}
