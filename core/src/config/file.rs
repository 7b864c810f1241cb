//! The TOML file as written by an operator: serde structs and nothing else.
//!
//! Only `config::Config::load` sees these types; every other module works with
//! the validated [`super::Config`]. Unknown keys are refused so that a typo is
//! an error, not a silently ignored setting.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub session: SessionFile,
    #[serde(default)]
    pub magic_link: MagicLinkFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub keys: KeysFile,
    #[serde(default)]
    pub mail: MailFile,
    #[serde(default)]
    pub users: UsersFile,
    #[serde(default)]
    pub rate_limit: RateLimitFile,
    pub portal: Option<PortalFile>,
    #[serde(default)]
    pub oidc: OidcFile,
    #[serde(default)]
    pub site: Vec<SiteFile>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    #[serde(default)]
    pub client: Vec<OidcClientFile>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OidcClientFile {
    pub id: Option<String>,
    pub name: Option<String>,
    pub secret: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    pub id_token_signed_response_alg: Option<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub allow_domains: Vec<String>,
    #[serde(default)]
    pub allow_emails: Vec<String>,
    #[serde(default)]
    pub allow_groups: Vec<String>,
    #[serde(default)]
    pub require_passkey: bool,
    /// May sign in programs by the device grant (RFC 8628).
    #[serde(default)]
    pub device_grant: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PortalFile {
    pub public_url: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<Vec<String>>,
    pub admin_listen: Option<String>,
    pub threads: Option<usize>,
    pub work_stealing: Option<bool>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub forward_auth_headers: Option<super::ForwardAuthHeaders>,
    #[serde(default)]
    pub tls: Vec<TlsFile>,
    pub tls_reload_interval: Option<String>,
    pub upgrade_socket: Option<String>,
    pub drain_timeout: Option<String>,
    pub access_log: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub listen: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub http2: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    pub rp_id: Option<String>,
    pub rp_name: Option<String>,
    pub passkey_prompt: Option<bool>,
    pub notify_new_device: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    pub cookie_name: Option<String>,
    pub cookie_domain: Option<String>,
    pub lifetime: Option<String>,
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MagicLinkFile {
    pub ttl: Option<String>,
    pub code_attempts: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub url: Option<String>,
    pub outage_grace: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    pub grace: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MailFile {
    pub transport: Option<MailTransportFile>,
    pub from: Option<String>,
    pub smtp_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MailTransportFile {
    Smtp,
    Console,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    pub signup: Option<SignupFile>,
    pub signup_domains: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SignupFile {
    Closed,
    Domains,
    Open,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub window: Option<String>,
    pub per_email: Option<u32>,
    pub per_client: Option<u32>,
    pub codes_per_email_per_day: Option<u32>,
    pub anonymous_per_client_per_minute: Option<u32>,
    pub passkey_starts_per_minute: Option<u32>,
    pub waits_per_client_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    pub name: Option<String>,
    pub public_url: Option<String>,
    pub upstream: Option<Vec<String>>,
    #[serde(default)]
    pub public_paths: Vec<String>,
    #[serde(default)]
    pub allow_domains: Vec<String>,
    #[serde(default)]
    pub allow_emails: Vec<String>,
    #[serde(default)]
    pub allow_groups: Vec<String>,
    #[serde(default)]
    pub require_passkey: bool,
    pub sign_assertion: Option<bool>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    #[serde(default)]
    pub upstream_tls: bool,
    pub upstream_sni: Option<String>,
    pub upstream_ca: Option<String>,
    pub health_check: Option<String>,
    pub health_interval: Option<String>,
    #[serde(default)]
    pub websocket_origins: Vec<String>,
    #[serde(default)]
    pub rule: Vec<RuleFile>,
    #[serde(default)]
    pub headers: HeaderNamesFile,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderNamesFile {
    pub user: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Option<String>,
    pub auth_method: Option<String>,
    pub assertion: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub path: Option<String>,
    pub action: Option<RuleActionFile>,
    #[serde(default)]
    pub allow_domains: Vec<String>,
    #[serde(default)]
    pub allow_emails: Vec<String>,
    #[serde(default)]
    pub allow_groups: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleActionFile {
    Allow,
    Deny,
    Public,
}
