//! What the admin commands (`sesame user|session ...`) do against a store,
//! returning the lines to print. Argument parsing lives in `main.rs`; the
//! store does the work, identically for SQLite and PostgreSQL.

use crate::email::Email;
use crate::keys::random_id;
use crate::store::{DynStore, StoreError, User};

/// A failed admin command: the message for the operator (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AdminError(pub String);

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError(e.to_string())
    }
}

type Out = Result<Vec<String>, AdminError>;

fn now() -> i64 {
    crate::clock::Clock::system().now()
}

fn email(raw: &str) -> Result<Email, AdminError> {
    Email::parse(raw).map_err(|e| AdminError(format!("{raw:?}: {e}")))
}

fn groups(raw: Vec<String>) -> Result<Vec<String>, AdminError> {
    match raw
        .iter()
        .find(|g| g.is_empty() || g.contains(',') || g.chars().any(char::is_control))
    {
        Some(g) => Err(AdminError(format!(
            "group {g:?}: must be non-empty and hold no comma or control character"
        ))),
        None => Ok(raw),
    }
}

fn missing(email: &Email) -> AdminError {
    AdminError(format!("no user {email}"))
}

pub async fn user_add(
    store: &DynStore,
    raw: &str,
    name: Option<String>,
    raw_groups: Vec<String>,
) -> Out {
    let email = email(raw)?;
    let groups = groups(raw_groups)?;
    if name
        .as_deref()
        .is_some_and(|n| n.chars().any(char::is_control))
    {
        return Err(AdminError("--name must not hold control characters".into()));
    }
    let user = User {
        id: format!("u_{}", random_id(12)).into(),
        email: email.clone(),
        name,
        groups,
        disabled: false,
        created_at: now(),
    };
    match store.add_user(&user).await {
        Ok(()) => Ok(vec![format!("added {email} ({})", user.id)]),
        Err(StoreError::Exists) => Err(AdminError(format!("{email} already exists"))),
        Err(e) => Err(e.into()),
    }
}

pub async fn user_list(store: &DynStore) -> Out {
    Ok(store
        .list_users()
        .await?
        .into_iter()
        .map(|u| {
            format!(
                "{}\t{}\t{}\t{}\t{}",
                u.email,
                u.id,
                u.name.as_deref().unwrap_or("-"),
                if u.groups.is_empty() {
                    "-".to_string()
                } else {
                    u.groups.join(",")
                },
                if u.disabled { "disabled" } else { "enabled" }
            )
        })
        .collect())
}

pub async fn user_remove(store: &DynStore, raw: &str) -> Out {
    let email = email(raw)?;
    match store.remove_user(&email, now()).await? {
        true => Ok(vec![format!("removed {email}; their sessions are revoked")]),
        false => Err(missing(&email)),
    }
}

pub async fn user_set_disabled(store: &DynStore, raw: &str, disabled: bool) -> Out {
    let email = email(raw)?;
    match store.set_user_disabled(&email, disabled, now()).await? {
        true if disabled => Ok(vec![format!(
            "disabled {email}; their sessions are revoked"
        )]),
        true => Ok(vec![format!("enabled {email}")]),
        false => Err(missing(&email)),
    }
}

pub async fn user_set_groups(store: &DynStore, raw: &str, raw_groups: Vec<String>) -> Out {
    let email = email(raw)?;
    let groups = groups(raw_groups)?;
    match store.set_user_groups(&email, &groups).await? {
        true => Ok(vec![format!(
            "{email}: groups are now {}",
            if groups.is_empty() {
                "-".into()
            } else {
                groups.join(",")
            }
        )]),
        false => Err(missing(&email)),
    }
}

/// Session ids as shown and accepted: the first 16 hex digits of the hash.
fn short(id_hash: &str) -> &str {
    &id_hash[..id_hash.len().min(16)]
}

pub async fn session_list(store: &DynStore, user: Option<&str>) -> Out {
    let user = user.map(email).transpose()?;
    Ok(store
        .list_sessions(user.as_ref(), now())
        .await?
        .into_iter()
        .map(|s| {
            format!(
                "{}\t{}\t{}\tcreated {}\texpires {}\tlast seen {}",
                short(&s.id_hash),
                s.email,
                s.auth_method.as_str(),
                s.created_at,
                s.expires_at,
                s.last_seen
            )
        })
        .collect())
}

pub async fn session_revoke_user(store: &DynStore, raw: &str) -> Out {
    let email = email(raw)?;
    let n = store.revoke_user_sessions(&email, now()).await?;
    Ok(vec![format!("revoked {n} session(s) of {email}")])
}

pub async fn session_revoke_id(store: &DynStore, prefix: &str) -> Out {
    if prefix.len() < 8 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AdminError(
            "--id takes at least 8 hex digits, as `sesame session list` shows".into(),
        ));
    }
    let prefix = prefix.to_ascii_lowercase();
    let matching: Vec<_> = store
        .list_sessions(None, now())
        .await?
        .into_iter()
        .filter(|s| s.id_hash.starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [one] => {
            store.revoke_session(&one.id_hash, now()).await?;
            Ok(vec![format!(
                "revoked session {} of {}",
                short(&one.id_hash),
                one.email
            )])
        }
        [] => Err(AdminError(format!("no live session {prefix}"))),
        _ => Err(AdminError(format!(
            "{prefix} matches {} sessions; give more digits",
            matching.len()
        ))),
    }
}

pub async fn keys_list(store: &DynStore, grace: std::time::Duration) -> Out {
    let mut records = store.keys().await?;
    crate::keys::sort_newest_first(&mut records);
    let states = crate::keys::key_states(&records, grace.as_secs() as i64, now());
    Ok(records
        .iter()
        .zip(states)
        .map(|(r, state)| {
            let state = match state {
                crate::keys::KeyState::Signing => "signing".to_string(),
                crate::keys::KeyState::Verifying(until) => format!("verifying until {until}"),
                crate::keys::KeyState::Retired => "retired".to_string(),
            };
            format!(
                "{}\t{}\tcreated {}\t{state}",
                r.kid,
                r.purpose.as_str(),
                r.created_at
            )
        })
        .collect())
}

/// Add a new key of every purpose; they sign from now on.
pub async fn keys_rotate(store: &DynStore) -> Out {
    let existing = store.keys().await?;
    let mut out = Vec::new();
    for purpose in crate::store::KeyPurpose::ALL {
        // Strictly newer than every key of its purpose, even within one second.
        let newest = existing
            .iter()
            .filter(|k| k.purpose == purpose)
            .map(|k| k.created_at)
            .max();
        let created_at = newest.map_or(now(), |n| now().max(n + 1));
        let key = crate::keys::new_key(purpose, created_at);
        store.add_key(&key).await?;
        out.push(format!(
            "added {} key {}; it signs from now on",
            purpose.as_str(),
            key.kid
        ));
    }
    Ok(out)
}

/// Delete every key but the newest of each purpose, at once (a leaked key
/// or database copy): what they sealed or signed stops working, so people
/// signed in before the last rotation sign in again.
pub async fn keys_retire(store: &DynStore) -> Out {
    let mut records = store.keys().await?;
    crate::keys::sort_newest_first(&mut records);
    let mut out = Vec::new();
    for purpose in crate::store::KeyPurpose::ALL {
        for old in records.iter().filter(|k| k.purpose == purpose).skip(1) {
            if store.remove_key(&old.kid).await? {
                out.push(format!("retired {} key {}", purpose.as_str(), old.kid));
            }
        }
    }
    if out.is_empty() {
        out.push(
            "no key to retire: each purpose has one key (run `sesame keys rotate` first)".into(),
        );
    }
    Ok(out)
}

pub async fn passkey_list(store: &DynStore, user: Option<&str>) -> Out {
    let owner = match user.map(email).transpose()? {
        Some(e) => Some(store.user_by_email(&e).await?.ok_or_else(|| missing(&e))?),
        None => None,
    };
    let users = store.list_users().await?;
    let email_of = |id: &str| {
        users
            .iter()
            .find(|u| u.id == id)
            .map(|u| u.email.to_string())
            .unwrap_or_else(|| "-".into())
    };
    Ok(store
        .list_passkeys()
        .await?
        .into_iter()
        .filter(|p| owner.as_ref().is_none_or(|o| o.id == p.user_id))
        .map(|p| {
            format!(
                "{}\t{}\t{}\t{}\tcreated {}\tlast used {}",
                p.id,
                email_of(&p.user_id),
                p.name,
                if p.backup_eligible {
                    "synced"
                } else {
                    "device-bound"
                },
                p.created_at,
                p.last_used_at
                    .map_or("never".to_string(), |t| t.to_string())
            )
        })
        .collect())
}

pub async fn passkey_revoke(store: &DynStore, id: &str) -> Out {
    match store.revoke_passkey(id).await? {
        true => Ok(vec![format!(
            "revoked passkey {id}; it can no longer sign in"
        )]),
        false => Err(AdminError(format!("no passkey {id}"))),
    }
}

/// `sesame oidc grants list`: what each OpenID Connect client holds.
pub async fn oidc_grants_list(store: &DynStore, user: Option<&str>) -> Out {
    let user_id = match user.map(email).transpose()? {
        Some(e) => match store.user_by_email(&e).await? {
            Some(u) => Some(u.id),
            None => return Err(AdminError(format!("no user {e}"))),
        },
        None => None,
    };
    let grants = store.list_oidc_grants(user_id.as_deref(), now()).await?;
    let mut lines = Vec::with_capacity(grants.len());
    for g in grants {
        let who = match store.user_by_id(&g.user_id).await? {
            Some(u) => u.email.to_string(),
            None => g.user_id.to_string(),
        };
        lines.push(format!(
            "{}\t{}\t{}\t{}\tsigned in {}\tgranted {}",
            g.id, g.client_id, who, g.scope, g.auth_time, g.created_at
        ));
    }
    Ok(lines)
}

/// `sesame oidc grants revoke --id | --user`: the client's tokens stop working.
pub async fn oidc_grants_revoke(store: &DynStore, id: Option<&str>, user: Option<&str>) -> Out {
    let ids: Vec<String> = match (id, user) {
        (Some(id), None) => vec![id.to_string()],
        (None, Some(u)) => {
            let e = email(u)?;
            let Some(user) = store.user_by_email(&e).await? else {
                return Err(AdminError(format!("no user {e}")));
            };
            store
                .list_oidc_grants(Some(&user.id), now())
                .await?
                .into_iter()
                .map(|g| g.id)
                .collect()
        }
        _ => return Err(AdminError("give --id or --user".into())),
    };
    let mut n = 0;
    for id in &ids {
        if store.revoke_oidc_grant(id, now()).await? {
            n += 1;
        }
    }
    if id.is_some() && n == 0 {
        return Err(AdminError(
            "no live grant with that id (see `sesame oidc grants list`)".into(),
        ));
    }
    Ok(vec![format!("revoked {n} grant(s)")])
}
