//! `GET /.sesame/auth`: the auth decision alone, for a proxy in front
//! (nginx `auth_request`, Traefik ForwardAuth, Caddy `forward_auth`).
//!
//! The original host, path and method come from the header family the
//! operator chose (`[server] forward_auth_headers`: `X-Forwarded-*` by
//! default, or `X-Original-*`), believed only from trusted proxies. The
//! other family's headers are what a client adds where the proxy passes
//! unknown headers on (Traefik, Caddy): when they disagree with the chosen
//! ones, or a header comes twice, the answer is 400, never a decision about
//! another path, host or method. A 200 always carries an identity, and every
//! identity header (empty where there is no value), so a proxy copying them
//! overwrites whatever the client sent; a malformed cookie never yields one.
//! Public paths are the front proxy's business here (it does not ask for
//! them).

use std::net::IpAddr;

use http::{header, HeaderMap, Method};
use serde_json::json;

use crate::app::App;
use crate::config::{ForwardAuthHeaders, SiteId};
use crate::endpoints::Resp;
use crate::gateway::headers::Identity;
use crate::metrics::Outcome;
use crate::policy::{self, Decision};

pub const PATH: &str = "/.sesame/auth";

/// Envoy's `ext_authz` HTTP service (also Envoy Gateway's
/// `SecurityPolicy.extAuth`, Istio's `envoyExtAuthzHttp` and the Gateway
/// API's `ExternalAuth` filter with `protocol: HTTP`): Envoy asks with the
/// original method and `Host`, and the original path appended to this
/// prefix; a `200` lets the request through with the headers Envoy is told
/// to copy, and anything else is the client's answer as it is (status,
/// headers, body), so a browser gets the `302` to the login page.
pub const EXT_AUTHZ_PREFIX: &str = "/.sesame/ext-authz";

/// The original path (and query) an ext_authz check asks about, if
/// `path_and_query` is one.
pub fn ext_authz_target(path_and_query: &str) -> Option<&str> {
    let rest = path_and_query.strip_prefix(EXT_AUTHZ_PREFIX)?;
    match rest.as_bytes().first() {
        None => Some("/"),
        Some(b'/') => Some(rest),
        Some(b'?') => None,
        Some(_) => None,
    }
}

/// Who asks, which shapes the answers that are not a `200`.
#[derive(Debug, Clone, Copy)]
enum Asker {
    /// nginx, Traefik, Caddy: `?redirect=1` asks for a `302` rather than a
    /// `401` (a proxy that shows the client Sesame's answer).
    FrontProxy { redirect: bool },
    /// Envoy, whose denials reach the client as they are: a person
    /// (`browser`) gets a redirect or a page, a program JSON.
    Envoy { browser: bool },
}

/// The request the front proxy is asking about.
#[derive(Debug, PartialEq, Eq)]
pub struct Original<'a> {
    pub host: Option<&'a str>,
    pub uri: &'a str,
    pub method: &'a str,
}

/// The header names of one family, for host, URI and method.
struct Family {
    host: &'static str,
    uri: &'static str,
    method: &'static str,
}

const X_FORWARDED: Family = Family {
    host: "x-forwarded-host",
    uri: "x-forwarded-uri",
    method: "x-forwarded-method",
};
const X_ORIGINAL: Family = Family {
    host: "x-original-host",
    uri: "x-original-uri",
    method: "x-original-method",
};

/// The value of `name` from the trusted proxy: `Ok(None)` if absent,
/// `Err(name)` if it is there twice or is not text (bytes beyond ASCII,
/// which nginx passes on raw from the client): such a request is refused
/// rather than decided for a path or host it is not.
fn single<'a>(h: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, &'static str> {
    let mut all = h.get_all(name).into_iter();
    match (all.next(), all.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| name),
        (Some(_), Some(_)) => Err(name),
    }
}

/// `chosen`'s value, refused when the other family's header (which a client
/// can add where the proxy sets only one family, as Traefik and Caddy do)
/// says something else.
fn forwarded<'a>(
    h: &'a HeaderMap,
    chosen: &'static str,
    other: &'static str,
) -> Result<Option<&'a str>, &'static str> {
    let value = single(h, chosen)?.filter(|v| !v.is_empty());
    match single(h, other)? {
        Some(o) if Some(o) != value => Err(other),
        _ => Ok(value),
    }
}

/// The request a proxy asks about, or the header that makes it unclear.
/// From an untrusted peer (`trusted` false) only its own `Host` counts, for
/// `/`; from a trusted proxy the host and URI are required (without them
/// there is no site or path to decide for) and read from `family`.
pub fn read_original(
    h: &HeaderMap,
    trusted: bool,
    family: ForwardAuthHeaders,
) -> Result<Original<'_>, &'static str> {
    let own_host = single(h, "host")?;
    if !trusted {
        return Ok(Original {
            host: own_host,
            uri: "/",
            method: "GET",
        });
    }
    let (ours, theirs) = match family {
        ForwardAuthHeaders::XForwarded => (X_FORWARDED, X_ORIGINAL),
        ForwardAuthHeaders::XOriginal => (X_ORIGINAL, X_FORWARDED),
    };
    Ok(Original {
        // Not the `Host` header: behind nginx that is the client's, and it
        // would choose which site's rules apply.
        host: Some(forwarded(h, ours.host, theirs.host)?.ok_or(ours.host)?),
        uri: forwarded(h, ours.uri, theirs.uri)?.ok_or(ours.uri)?,
        method: forwarded(h, ours.method, theirs.method)?.unwrap_or("GET"),
    })
}

/// Decide; returns the site index (if any), the outcome and the answer.
pub async fn check(
    app: &App,
    peer: IpAddr,
    headers: &HeaderMap,
    query: &str,
) -> (Option<SiteId>, Outcome, Resp) {
    let trusted = app.config.trusted_proxies.trusts(peer);
    let o = match read_original(headers, trusted, app.config.forward_auth_headers) {
        Ok(o) => o,
        Err(name) => {
            return (
                None,
                Outcome::BadPath,
                Resp::json(400, &json!({"error": "bad_request", "header": name})),
            )
        }
    };
    // The portal has no app behind it: nothing to check.
    let Some((site_id, _)) = o
        .host
        .and_then(|h| app.site_for_host(h))
        .filter(|(id, _)| !app.is_portal(*id))
    else {
        return (
            None,
            Outcome::UnknownSite,
            Resp::json(404, &json!({"error": "unknown_site"})),
        );
    };
    let wants_redirect =
        form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "redirect" && v == "1");
    let asker = Asker::FrontProxy {
        redirect: wants_redirect && o.method.eq_ignore_ascii_case(Method::GET.as_str()),
    };
    decide(app, site_id, headers, &o, asker).await
}

/// `POST|GET|… /.sesame/ext-authz/PATH` from Envoy: decide for `PATH` on
/// the site of the `Host` header, asked with `method`.
pub async fn ext_authz(
    app: &App,
    method: &str,
    headers: &HeaderMap,
    target: &str,
) -> (Option<SiteId>, Outcome, Resp) {
    let host = match single(headers, "host") {
        Ok(h) => h,
        Err(name) => {
            return (
                None,
                Outcome::BadPath,
                Resp::json(400, &json!({"error": "bad_request", "header": name})),
            )
        }
    };
    let Some((site_id, _)) = host
        .and_then(|h| app.site_for_host(h))
        .filter(|(id, _)| !app.is_portal(*id))
    else {
        return (
            None,
            Outcome::UnknownSite,
            Resp::json(404, &json!({"error": "unknown_site"})),
        );
    };
    // A person: a page load. Envoy passes `Accept` only when told to; a
    // GET without it is taken for a browser.
    let reads_html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_none_or(|a| a.contains("text/html"));
    let browser = (method == "GET" || method == "HEAD") && reads_html;
    let o = Original {
        host,
        uri: target,
        method,
    };
    decide(app, site_id, headers, &o, Asker::Envoy { browser }).await
}

/// `x-envoy-auth-headers-to-remove`: what Envoy would pass on from the
/// client and must not.
/// - The identity headers Sesame does not set in this answer (`unset`): all
///   of them on a public path, the name or assertion a session lacks.
///   Envoy overwrites the ones the answer sets (they must be in its
///   `allowed_upstream_headers`) and removes these.
/// - Every identity header's name with `_` for `-` (`remote_user`), which
///   apps reading CGI-style variables take for the real one.
/// - The headers apps believe from a proxy (`X-Original-URL` routes some
///   apps by another path than the one judged here; `X-Forwarded-Host`).
fn headers_to_remove<'a>(
    site: &'a crate::app::SiteRt,
    unset: impl Iterator<Item = &'a http::HeaderName>,
) -> (http::HeaderName, http::HeaderValue) {
    let names = &site.site.headers;
    let mut remove: Vec<String> = unset.map(|n| n.as_str().to_string()).collect();
    remove.extend(
        names
            .all()
            .iter()
            .filter(|n| n.as_str().contains('-'))
            .map(|n| n.as_str().replace('-', "_")),
    );
    remove.extend(
        crate::gateway::headers::PROXY_ONLY
            .iter()
            .chain([&header::HeaderName::from_static("x-forwarded-host")])
            .map(|n| n.as_str().to_string()),
    );
    (
        http::HeaderName::from_static("x-envoy-auth-headers-to-remove"),
        // Header names joined by ", " are a valid header value.
        http::HeaderValue::from_str(&remove.join(", "))
            .unwrap_or(http::HeaderValue::from_static("")),
    )
}

/// The decision for the original request `o` on site `site_id`, answered
/// as `asker` expects.
async fn decide(
    app: &App,
    site_id: SiteId,
    headers: &HeaderMap,
    o: &Original<'_>,
    asker: Asker,
) -> (Option<SiteId>, Outcome, Resp) {
    let site = app.site(site_id);
    // A WebSocket the proxy relays (Caddy and Traefik pass the client's
    // handshake headers on): from the site's own origin only.
    if headers.contains_key("sec-websocket-key")
        && !crate::gateway::upgrade::origin_allowed(
            headers,
            &site.site.origin,
            &site.site.websocket_origins,
        )
    {
        app.metrics
            .upgrades
            .with_label_values(&["cross_origin"])
            .inc();
        return (
            Some(site_id),
            Outcome::Denied,
            Resp::json(403, &json!({"error": "cross_origin_websocket"})),
        );
    }
    if !o.uri.starts_with('/') {
        return (
            Some(site_id),
            Outcome::BadPath,
            Resp::json(400, &json!({"error": "bad_path"})),
        );
    }
    let path = o.uri.split(['?', '#']).next().unwrap_or("/");
    let cookie = policy::session_cookie(
        site,
        headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()),
    );
    let (decision, checked) = policy::decide_checked(app, site, path, cookie).await;
    // Envoy sends the app the path as the client spelled it: the decision
    // holds only if that is the path judged (`/public/../admin` is judged
    // as `/admin`, and an app may read it otherwise). Envoy's
    // `normalize_path` and `merge_slashes` make every path normal first.
    if let (Asker::Envoy { .. }, Some(checked)) = (asker, &checked) {
        if crate::path::encode(checked) != path {
            return (
                Some(site_id),
                Outcome::BadPath,
                Resp::json(
                    400,
                    &json!({"error": "bad_path", "normal_path": crate::path::encode(checked)}),
                ),
            );
        }
    }
    let outcome = decision.outcome();
    let login_url = || site.site.sesame_url_back_to("/login", o.uri);
    let resp = match decision {
        Decision::Allow(live) => {
            let assertion = app.assertion(site_id, &live);
            let identity = Identity {
                live: &live,
                assertion: assertion.as_ref().map(|a| &a.header),
            };
            let mut resp = Resp::new(200, "text/plain; charset=utf-8", "");
            resp.headers.push((
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            ));
            match asker {
                // A front proxy copies every header it is told to: an
                // empty one overwrites what the client sent.
                Asker::FrontProxy { .. } => resp.headers.extend(identity.all_headers(site)),
                // Envoy copies the ones given and removes the others.
                Asker::Envoy { .. } => {
                    let set: Vec<_> = identity.headers(site).collect();
                    let all = site.site.headers.all();
                    let unset = all
                        .into_iter()
                        .filter(|n| !set.iter().any(|(s, _)| s == *n));
                    resp.headers.push(headers_to_remove(site, unset));
                    resp.headers.extend(set);
                }
            }
            resp
        }
        // Envoy asks about every path: a public one goes through, with
        // every identity header the client sent removed.
        Decision::Public if matches!(asker, Asker::Envoy { .. }) => {
            let mut resp = Resp::new(200, "text/plain; charset=utf-8", "");
            resp.headers.push((
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            ));
            resp.headers
                .push(headers_to_remove(site, site.site.headers.all().into_iter()));
            resp
        }
        // Public or not signed in: no identity, so no 200 (front proxies
        // do not ask about their public paths).
        Decision::Public | Decision::Login => match asker {
            Asker::FrontProxy { redirect: true } | Asker::Envoy { browser: true } => {
                Resp::redirect(302, &login_url())
            }
            _ => Resp::json(
                401,
                &json!({"error": "unauthenticated", "login_url": login_url()}),
            )
            .header(header::WWW_AUTHENTICATE, "Sesame"),
        },
        Decision::Deny(live) => match asker {
            Asker::Envoy { browser: true } => {
                let message = format!(
                    "You are signed in as {}, who may not use {}. Sign out to use another account.",
                    live.record.email, site.site.name
                );
                crate::endpoints::ErrorPage {
                    signout: true,
                    ..crate::endpoints::ErrorPage::new(&site.site.name, "No access", &message)
                }
                .respond(app, 403)
            }
            _ => Resp::json(
                403,
                &json!({"error": "forbidden", "signed_in_as": live.record.email.as_str()}),
            ),
        },
        Decision::StepUp(_) => {
            let url = site.site.sesame_url_back_to("/stepup", o.uri);
            match asker {
                Asker::Envoy { browser: true } => Resp::redirect(302, &url),
                _ => Resp::json(
                    403,
                    &json!({"error": "passkey_required", "stepup_url": url}),
                ),
            }
        }
        Decision::BadPath => Resp::json(400, &json!({"error": "bad_path"})),
        Decision::Unavailable => {
            Resp::json(503, &json!({"error": "unavailable"})).header(header::RETRY_AFTER, "5")
        }
    };
    (Some(site_id), outcome, resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    const FWD: ForwardAuthHeaders = ForwardAuthHeaders::XForwarded;
    const ORIG: ForwardAuthHeaders = ForwardAuthHeaders::XOriginal;

    #[test]
    fn a_trusted_proxy_names_host_uri_and_method_in_its_family() {
        let h = headers(&[
            ("host", b"sesame.internal"),
            ("x-forwarded-host", b"wiki.example.com"),
            ("x-forwarded-uri", b"/page?x=1"),
            ("x-forwarded-method", b"POST"),
        ]);
        let o = read_original(&h, true, FWD).unwrap();
        assert_eq!(
            o,
            Original {
                host: Some("wiki.example.com"),
                uri: "/page?x=1",
                method: "POST",
            }
        );
        let h = headers(&[
            ("x-original-host", b"wiki.example.com"),
            ("x-original-uri", b"/"),
        ]);
        let o = read_original(&h, true, ORIG).unwrap();
        assert_eq!(
            (o.host, o.uri, o.method),
            (Some("wiki.example.com"), "/", "GET")
        );
    }

    #[test]
    fn without_host_or_uri_from_a_trusted_proxy_there_is_nothing_to_decide() {
        let only_uri = headers(&[("host", b"wiki.example.com"), ("x-forwarded-uri", b"/")]);
        assert_eq!(read_original(&only_uri, true, FWD), Err("x-forwarded-host"));
        let only_host = headers(&[("x-forwarded-host", b"wiki.example.com")]);
        assert_eq!(read_original(&only_host, true, FWD), Err("x-forwarded-uri"));
        // An empty value is no value.
        let empty = headers(&[("x-forwarded-host", b""), ("x-forwarded-uri", b"/")]);
        assert_eq!(read_original(&empty, true, FWD), Err("x-forwarded-host"));
    }

    #[test]
    fn the_other_family_disagreeing_or_a_header_twice_is_refused() {
        let base: [(&'static str, &[u8]); 2] = [
            ("x-forwarded-host", b"wiki.example.com"),
            ("x-forwarded-uri", b"/"),
        ];
        let with = |extra: (&'static str, &'static [u8])| {
            let mut pairs = base.to_vec();
            pairs.push(extra);
            headers(&pairs)
        };
        // A client's X-Original-Uri where the proxy sets X-Forwarded-*.
        assert_eq!(
            read_original(&with(("x-original-uri", b"/admin")), true, FWD),
            Err("x-original-uri")
        );
        assert_eq!(
            read_original(&with(("x-original-host", b"git.example.com")), true, FWD),
            Err("x-original-host")
        );
        // The same value in both families is no contradiction.
        assert!(read_original(&with(("x-original-uri", b"/")), true, FWD).is_ok());
        assert_eq!(
            read_original(&with(("x-forwarded-uri", b"/admin")), true, FWD),
            Err("x-forwarded-uri")
        );
        // A proxy set up for X-Original-* that sends none, and a client's
        // X-Forwarded-Host: refused on that header, not taken.
        assert_eq!(
            read_original(&with(("x-forwarded-method", b"GET")), true, ORIG),
            Err("x-forwarded-host")
        );
    }

    #[test]
    fn bytes_beyond_ascii_are_refused_not_guessed() {
        let h = headers(&[
            ("x-forwarded-host", b"wiki.example.com"),
            ("x-forwarded-uri", b"/caf\xc3\xa9"),
        ]);
        assert_eq!(read_original(&h, true, FWD), Err("x-forwarded-uri"));
    }

    #[test]
    fn an_untrusted_peer_is_asked_about_its_own_host_and_the_root_only() {
        let h = headers(&[
            ("host", b"wiki.example.com"),
            ("x-forwarded-host", b"git.example.com"),
            ("x-forwarded-uri", b"/admin"),
            ("x-forwarded-method", b"DELETE"),
        ]);
        let o = read_original(&h, false, FWD).unwrap();
        assert_eq!(
            o,
            Original {
                host: Some("wiki.example.com"),
                uri: "/",
                method: "GET",
            }
        );
        let twice = headers(&[("host", b"a.example.com"), ("host", b"b.example.com")]);
        assert_eq!(read_original(&twice, false, FWD), Err("host"));
    }
}
