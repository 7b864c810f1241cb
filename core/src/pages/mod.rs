//! HTML pages and emails rendered from `assets/templates/` and
//! `assets/email/` (compiled into the binary), and the static assets.
//!
//! Rendering only: which page to show, with what status, is the caller's.

use minijinja::Environment;
use serde::Serialize;

pub struct Pages {
    env: Environment<'static>,
}

const TEMPLATES: &[(&str, &str)] = &[
    (
        "base.html",
        include_str!("../../assets/templates/base.html"),
    ),
    (
        "login.html",
        include_str!("../../assets/templates/login.html"),
    ),
    (
        "check_email.html",
        include_str!("../../assets/templates/check_email.html"),
    ),
    (
        "confirm.html",
        include_str!("../../assets/templates/confirm.html"),
    ),
    (
        "error.html",
        include_str!("../../assets/templates/error.html"),
    ),
    (
        "account.html",
        include_str!("../../assets/templates/account.html"),
    ),
    (
        "passkey_offer.html",
        include_str!("../../assets/templates/passkey_offer.html"),
    ),
    (
        "stepup.html",
        include_str!("../../assets/templates/stepup.html"),
    ),
    (
        "phone.html",
        include_str!("../../assets/templates/phone.html"),
    ),
    (
        "device.html",
        include_str!("../../assets/templates/device.html"),
    ),
    (
        "form_post.html",
        include_str!("../../assets/templates/form_post.html"),
    ),
    (
        "magic_link.html",
        include_str!("../../assets/email/magic_link.html"),
    ),
    (
        "magic_link.txt",
        include_str!("../../assets/email/magic_link.txt"),
    ),
    (
        "new_browser.html",
        include_str!("../../assets/email/new_browser.html"),
    ),
    (
        "new_browser.txt",
        include_str!("../../assets/email/new_browser.txt"),
    ),
    (
        "passkey_notice.html",
        include_str!("../../assets/email/passkey_notice.html"),
    ),
    (
        "passkey_notice.txt",
        include_str!("../../assets/email/passkey_notice.txt"),
    ),
    (
        "passkey_code.html",
        include_str!("../../assets/email/passkey_code.html"),
    ),
    (
        "passkey_code.txt",
        include_str!("../../assets/email/passkey_code.txt"),
    ),
];

/// A static asset: path under `/.sesame/static/`, content type, body.
pub const STATIC: &[(&str, &str, &str)] = &[
    (
        "sesame.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/static/sesame.css"),
    ),
    (
        "confirm.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/static/confirm.js"),
    ),
    (
        "wait.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/static/wait.js"),
    ),
    (
        "form_post.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/static/form_post.js"),
    ),
    (
        "passkey.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/static/passkey.js"),
    ),
];

impl Pages {
    pub fn new() -> Pages {
        let mut env = Environment::new();
        for (name, src) in TEMPLATES {
            if let Err(e) = env.add_template(name, src) {
                // The templates are compiled in; a broken one is a build defect
                // that the test suite catches, so log and serve the fallback.
                tracing::error!(template = name, error = %e, "template does not parse");
            }
        }
        Pages { env }
    }

    /// Render a template; on failure a plain fallback page, never a panic.
    pub fn render<S: Serialize>(&self, name: &str, ctx: &S) -> String {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(template = name, error = %e, "template failed to render");
                "<!doctype html><title>Error</title><p>Something went wrong. Please try again.</p>"
                    .to_string()
            }
        }
    }
}

impl Default for Pages {
    fn default() -> Self {
        Pages::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes() {
        let pages = Pages::new();
        for (name, _) in TEMPLATES {
            assert!(
                pages.env.get_template(name).is_ok(),
                "{name} does not parse"
            );
        }
        let html = pages.render(
            "login.html",
            &serde_json::json!({"site_name": "<b>x</b>", "rd": "\"><script>", "email": null, "error": null}),
        );
        assert!(html.contains("&lt;b&gt;x"), "{html}");
        assert!(!html.contains("\"><script>"));
    }
}
