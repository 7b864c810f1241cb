//! OpenID Connect Back-Channel Logout 1.0: when a sign-in at the portal
//! ends (signed out, revoked, the user disabled, on any instance or from
//! the command line), every client holding a grant of it that registered a
//! `backchannel_logout_uri` gets a logout token posted to it.
//!
//! The store is the outbox: once a second, an instance claims the grants
//! whose session was revoked and not yet handled (each claimed by one
//! instance only), and posts one token per client and sign-in. A client
//! that does not answer `200` is logged and counted, not retried: its
//! tokens stopped working with the sign-in anyway.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::app::App;

/// Send the logout tokens due; returns how many were posted.
pub async fn send_due(app: &App, http: &reqwest::Client) -> usize {
    let Some(oidc) = &app.oidc else { return 0 };
    let now = app.clock.now();
    let grants = match app.store.claim_oidc_logouts(now).await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the sign-ins that ended; trying again");
            return 0;
        }
    };
    // One token per client and sign-in, however many grants it held.
    let due: BTreeSet<(String, String, String)> = grants
        .into_iter()
        .map(|g| (g.client_id, g.user_id.to_string(), g.session.to_string()))
        .collect();
    let mut sent = 0;
    for (client_id, sub, session) in due {
        let Some(uri) = oidc
            .client(&client_id)
            .and_then(|c| c.backchannel_logout_uri.as_deref())
        else {
            continue;
        };
        let Some(token) = oidc.logout_token(&client_id, &sub, crate::oidc::sid(&session), now)
        else {
            continue;
        };
        let result = http
            .post(uri)
            .form(&[("logout_token", token.as_str())])
            .send()
            .await;
        let outcome = match result {
            Ok(r) if r.status().is_success() => "ok",
            Ok(r) => {
                tracing::warn!(client = %client_id, status = r.status().as_u16(), "back-channel logout refused by the client");
                "refused"
            }
            Err(e) => {
                tracing::warn!(client = %client_id, error = %e, "back-channel logout could not be delivered");
                "failed"
            }
        };
        app.metrics
            .oidc_backchannel
            .with_label_values(&[outcome])
            .inc();
        sent += 1;
    }
    sent
}

/// The HTTP client logout tokens go out with: short timeouts, no redirects
/// (a logout URI that redirects is not followed anywhere).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Sesame/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}
