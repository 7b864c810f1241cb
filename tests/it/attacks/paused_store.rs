//! [`PausedStore`]'s store traits: the session read that can be held back,
//! and the rest handed to the real store as it is.

use sesame::email::Email;
use sesame::store::*;

use super::PausedStore;

#[async_trait::async_trait]
impl Store for PausedStore {
    async fn ensure_secret(&self, name: &str, fresh: &[u8], now: i64) -> StoreResult<Vec<u8>> {
        self.inner.ensure_secret(name, fresh, now).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn counts(&self, now: i64) -> StoreResult<Counts> {
        self.inner.counts(now).await
    }
}

#[async_trait::async_trait]
impl UserStore for PausedStore {
    async fn add_user(&self, user: &User) -> StoreResult<()> {
        self.inner.add_user(user).await
    }
    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        self.inner.user_by_email(email).await
    }
    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.inner.list_users().await
    }
    async fn remove_user(&self, email: &Email, now: i64) -> StoreResult<bool> {
        self.inner.remove_user(email, now).await
    }
    async fn set_user_disabled(
        &self,
        email: &Email,
        disabled: bool,
        now: i64,
    ) -> StoreResult<bool> {
        self.inner.set_user_disabled(email, disabled, now).await
    }
    async fn set_user_groups(&self, email: &Email, groups: &[String]) -> StoreResult<bool> {
        self.inner.set_user_groups(email, groups).await
    }
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        self.inner.user_by_id(id).await
    }
    async fn user_by_handle(&self, handle: &str) -> StoreResult<Option<User>> {
        self.inner.user_by_handle(handle).await
    }
    async fn remember_browser(
        &self,
        user_id: &str,
        browser: &str,
        now: i64,
    ) -> StoreResult<BrowserSeen> {
        self.inner.remember_browser(user_id, browser, now).await
    }
    async fn ensure_user_handle(&self, user_id: &str, fresh: &str) -> StoreResult<String> {
        self.inner.ensure_user_handle(user_id, fresh).await
    }
}

#[async_trait::async_trait]
impl DeviceRequestStore for PausedStore {
    async fn create_device_request(&self, r: &DeviceRequest) -> StoreResult<()> {
        self.inner.create_device_request(r).await
    }
    async fn device_request(&self, id: &str) -> StoreResult<Option<DeviceRequest>> {
        self.inner.device_request(id).await
    }
    async fn device_request_by_code(&self, code: &str) -> StoreResult<Option<DeviceRequest>> {
        self.inner.device_request_by_code(code).await
    }
    async fn decide_device_request(
        &self,
        id: &str,
        now: i64,
        decision: Decision,
        approver: Option<(&UserId, AuthMethod)>,
        collect_by: i64,
    ) -> StoreResult<Option<DeviceRequest>> {
        self.inner
            .decide_device_request(id, now, decision, approver, collect_by)
            .await
    }
    async fn collect_device_request(
        &self,
        id: &str,
        now: i64,
    ) -> StoreResult<Option<DeviceRequest>> {
        self.inner.collect_device_request(id, now).await
    }
    async fn decided_device_requests(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        self.inner.decided_device_requests(ids).await
    }
    async fn sweep_device_requests(&self, now: i64) -> StoreResult<Vec<RequestKind>> {
        self.inner.sweep_device_requests(now).await
    }
}

#[async_trait::async_trait]
impl PendingStore for PausedStore {
    async fn create_pending(&self, login: &PendingLogin) -> StoreResult<()> {
        self.inner.create_pending(login).await
    }
    async fn view_pending(&self, id: &str) -> StoreResult<Option<PendingLogin>> {
        self.inner.view_pending(id).await
    }
    async fn pending(&self, id: &str) -> StoreResult<Option<PendingLogin>> {
        self.inner.pending(id).await
    }
    async fn consume_pending(&self, id: &str, now: i64) -> StoreResult<Option<PendingLogin>> {
        self.inner.consume_pending(id, now).await
    }
    async fn decide_pending(
        &self,
        id: &str,
        now: i64,
        decision: Decision,
        collect_by: i64,
    ) -> StoreResult<Option<PendingLogin>> {
        self.inner
            .decide_pending(id, now, decision, collect_by)
            .await
    }
    async fn collect_pending(&self, id: &str, now: i64) -> StoreResult<Option<PendingLogin>> {
        self.inner.collect_pending(id, now).await
    }
    async fn decided_pending(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        self.inner.decided_pending(ids).await
    }
    async fn sweep_pending(&self, now: i64) -> StoreResult<SweptPending> {
        self.inner.sweep_pending(now).await
    }
    async fn attempt_code(
        &self,
        id: &str,
        now: i64,
        max_attempts: u32,
    ) -> StoreResult<Option<PendingLogin>> {
        self.inner.attempt_code(id, now, max_attempts).await
    }
}

#[async_trait::async_trait]
impl SessionStore for PausedStore {
    async fn session(&self, id_hash: &str) -> StoreResult<Option<SessionRecord>> {
        let read = self.inner.session(id_hash).await;
        let armed = self.armed.lock().unwrap().take();
        if let Some((reached, release)) = armed {
            let _ = reached.send(());
            let _ = release.await;
        }
        read
    }
    async fn create_session(&self, session: &SessionRecord) -> StoreResult<Option<SessionRecord>> {
        self.inner.create_session(session).await
    }
    async fn touch_sessions(&self, touches: &[(String, i64)]) -> StoreResult<()> {
        self.inner.touch_sessions(touches).await
    }
    async fn revoke_session(&self, id_hash: &str, now: i64) -> StoreResult<bool> {
        self.inner.revoke_session(id_hash, now).await
    }
    async fn revoke_user_sessions(&self, email: &Email, now: i64) -> StoreResult<u64> {
        self.inner.revoke_user_sessions(email, now).await
    }
    async fn list_sessions(
        &self,
        user: Option<&Email>,
        now: i64,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.inner.list_sessions(user, now).await
    }
}

#[async_trait::async_trait]
impl HandoffStore for PausedStore {
    async fn put_handoff(&self, handoff: &Handoff) -> StoreResult<()> {
        self.inner.put_handoff(handoff).await
    }
    async fn take_handoff(&self, code_hash: &str, now: i64) -> StoreResult<Option<Handoff>> {
        self.inner.take_handoff(code_hash, now).await
    }
    async fn sweep_handoffs(&self, now: i64) -> StoreResult<()> {
        self.inner.sweep_handoffs(now).await
    }
}

#[async_trait::async_trait]
impl OidcStore for PausedStore {
    async fn put_oidc_code(&self, code: &OidcCode) -> StoreResult<()> {
        self.inner.put_oidc_code(code).await
    }
    async fn take_oidc_code(&self, code_hash: &str, now: i64) -> StoreResult<CodeTaken> {
        self.inner.take_oidc_code(code_hash, now).await
    }
    async fn create_oidc_grant(
        &self,
        grant: &OidcGrant,
        code_hash: Option<&str>,
        tokens: &[NewToken],
    ) -> StoreResult<bool> {
        self.inner.create_oidc_grant(grant, code_hash, tokens).await
    }
    async fn use_refresh_token(&self, token_hash: &str, now: i64) -> StoreResult<RefreshUse> {
        self.inner.use_refresh_token(token_hash, now).await
    }
    async fn add_oidc_tokens(&self, grant_id: &str, tokens: &[NewToken]) -> StoreResult<()> {
        self.inner.add_oidc_tokens(grant_id, tokens).await
    }
    async fn revoke_oidc_token(
        &self,
        token_hash: &str,
        client_id: &str,
        now: i64,
    ) -> StoreResult<bool> {
        self.inner
            .revoke_oidc_token(token_hash, client_id, now)
            .await
    }
    async fn oidc_access(&self, token_hash: &str, now: i64) -> StoreResult<Option<OidcGrant>> {
        self.inner.oidc_access(token_hash, now).await
    }
    async fn revoke_oidc_grant(&self, id: &str, now: i64) -> StoreResult<bool> {
        self.inner.revoke_oidc_grant(id, now).await
    }
    async fn list_oidc_grants(
        &self,
        user_id: Option<&str>,
        now: i64,
    ) -> StoreResult<Vec<OidcGrant>> {
        self.inner.list_oidc_grants(user_id, now).await
    }
    async fn claim_oidc_logouts(&self, now: i64) -> StoreResult<Vec<OidcGrant>> {
        self.inner.claim_oidc_logouts(now).await
    }
    async fn sweep_oidc(&self, before: i64) -> StoreResult<()> {
        self.inner.sweep_oidc(before).await
    }
}

#[async_trait::async_trait]
impl RateLimitStore for PausedStore {
    async fn count_hit(&self, key: &str, window_start: i64) -> StoreResult<i64> {
        self.inner.count_hit(key, window_start).await
    }
    async fn sweep_rate_limits(&self, before: i64) -> StoreResult<()> {
        self.inner.sweep_rate_limits(before).await
    }
    async fn hits(&self, key: &str, window_start: i64) -> StoreResult<i64> {
        self.inner.hits(key, window_start).await
    }
}

#[async_trait::async_trait]
impl KeyStore for PausedStore {
    async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.inner.keys().await
    }
    async fn ensure_key(&self, key: &KeyRecord) -> StoreResult<()> {
        self.inner.ensure_key(key).await
    }
    async fn add_key(&self, key: &KeyRecord) -> StoreResult<()> {
        self.inner.add_key(key).await
    }
    async fn remove_key(&self, kid: &str) -> StoreResult<bool> {
        self.inner.remove_key(kid).await
    }
}

#[async_trait::async_trait]
impl PasskeyStore for PausedStore {
    async fn add_passkey(&self, passkey: &PasskeyRecord) -> StoreResult<()> {
        self.inner.add_passkey(passkey).await
    }
    async fn passkeys_of(&self, user_id: &str) -> StoreResult<Vec<PasskeyRecord>> {
        self.inner.passkeys_of(user_id).await
    }
    async fn passkey(&self, id: &str) -> StoreResult<Option<PasskeyRecord>> {
        self.inner.passkey(id).await
    }
    async fn rename_passkey(&self, user_id: &str, id: &str, name: &str) -> StoreResult<bool> {
        self.inner.rename_passkey(user_id, id, name).await
    }
    async fn delete_passkey(&self, user_id: &str, id: &str) -> StoreResult<bool> {
        self.inner.delete_passkey(user_id, id).await
    }
    async fn list_passkeys(&self) -> StoreResult<Vec<PasskeyRecord>> {
        self.inner.list_passkeys().await
    }
    async fn revoke_passkey(&self, id: &str) -> StoreResult<bool> {
        self.inner.revoke_passkey(id).await
    }
    async fn put_ceremony(&self, ceremony: &Ceremony) -> StoreResult<()> {
        self.inner.put_ceremony(ceremony).await
    }
    async fn take_ceremony(&self, id: &str, now: i64) -> StoreResult<Option<Ceremony>> {
        self.inner.take_ceremony(id, now).await
    }
    async fn passkey_used(
        &self,
        after: &PasskeyRecord,
        seen_counter: i64,
        now: i64,
    ) -> StoreResult<bool> {
        self.inner.passkey_used(after, seen_counter, now).await
    }
}
