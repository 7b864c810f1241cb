//! The WebAuthn relying party: one `Webauthn` (webauthn-rs) for every
//! configured site whose host is the RP id or below it; the others have no
//! passkeys.

use webauthn_rs::prelude::*;

use super::PasskeyError;
use crate::config::{Site, SiteId};

/// The relying party: one `Webauthn` for every site whose host is the RP id
/// or below it.
pub struct RelyingParty {
    webauthn: Option<Webauthn>,
    sites: Vec<bool>,
}

impl RelyingParty {
    /// Passkeys for the sites that `serves` (by index) and whose host is
    /// `rp_id` or under it.
    pub fn new(
        rp_id: &str,
        rp_name: &str,
        sites: &[Site],
        serves: impl Fn(usize) -> bool,
    ) -> RelyingParty {
        let under = |s: &Site| s.host == rp_id || s.host.ends_with(&format!(".{rp_id}"));
        let enabled: Vec<bool> = sites
            .iter()
            .enumerate()
            .map(|(i, s)| serves(i) && under(s))
            .collect();
        let mut origins = sites
            .iter()
            .zip(&enabled)
            .filter(|(_, on)| **on)
            .map(|(s, _)| s.public_url.clone());
        let webauthn = origins.next().and_then(|first| {
            let mut b = WebauthnBuilder::new(rp_id, &first).ok()?.rp_name(rp_name);
            for o in origins {
                b = b.append_allowed_origin(&o);
            }
            match b.build() {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, rp_id, "passkeys are disabled: the relying party could not be set up");
                    None
                }
            }
        });
        RelyingParty {
            webauthn,
            sites: enabled,
        }
    }

    /// Whether passkeys work on this site.
    pub fn available(&self, site: SiteId) -> bool {
        self.for_site(site).is_ok()
    }

    pub(super) fn for_site(&self, site: SiteId) -> Result<&Webauthn, PasskeyError> {
        match (&self.webauthn, self.sites.get(site.index())) {
            (Some(w), Some(true)) => Ok(w),
            _ => Err(PasskeyError::NotAvailable),
        }
    }
}
