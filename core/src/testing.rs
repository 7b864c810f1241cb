//! The rig of the core's unit tests: every part of sign-in from real pieces
//! (a SQLite file in a temporary folder, the real keys, sessions, limits
//! and outbox) with a clock the tests move and a mailer that hands each
//! message to the test. Two sites: passkeys work on the first (the RP id is
//! its host), not on the second.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Mutex};

use crate::clock::Clock;
use crate::config::{Config, Signup, Site, StoreConfig};
use crate::email::Email;
use crate::keys::Keys;
use crate::mail::{MailError, Mailer, Outbox, OutgoingMail};
use crate::metrics::Metrics;
use crate::pages::Pages;
use crate::passkey::{Ceremonies, RelyingParty};
use crate::ratelimit::RateLimiter;
use crate::return_to::ReturnTo;
use crate::session::{LiveSession, Sessions};
use crate::signin::cross_device::{Asker, Waiters};
use crate::signin::pending::PendingState;
use crate::signin::{Limits, SignIn};
use crate::store::{DynStore, User};

/// Hands every mail to the test.
pub(crate) struct Recorder(mpsc::UnboundedSender<OutgoingMail>);

#[async_trait]
impl Mailer for Recorder {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        let _ = self.0.send(mail.clone());
        Ok(())
    }
    async fn check(&self) -> Result<(), MailError> {
        Ok(())
    }
}

pub(crate) struct Rig {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) config: Config,
    pub(crate) store: DynStore,
    pub(crate) keys: Keys,
    pub(crate) clock: Clock,
    pub(crate) sessions: Sessions,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) pages: Pages,
    pub(crate) outbox: Outbox,
    pub(crate) client: RateLimiter,
    pub(crate) email: RateLimiter,
    pub(crate) code: RateLimiter,
    pub(crate) mail: Mutex<mpsc::UnboundedReceiver<OutgoingMail>>,
    pub(crate) rp: RelyingParty,
    pub(crate) waiters: Waiters,
}

/// A link and code as the email carries them.
pub(crate) struct Mailed {
    pub(crate) pending_id: String,
    pub(crate) token: String,
    pub(crate) code: String,
}

/// The asking browser's User-Agent.
pub(crate) const FIREFOX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

pub(crate) const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

impl Rig {
    pub(crate) async fn new(signup: Signup) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::from_toml(
            r#"
            [[site]]
            public_url = "https://wiki.example.com"
            upstream = ["127.0.0.1:3000"]
            [[site]]
            public_url = "https://git.example.com"
            upstream = ["127.0.0.1:3001"]
            "#,
        )
        .unwrap();
        config.signup = signup;
        let store = crate::store::open(&StoreConfig::Sqlite {
            path: dir.path().join("sesame.db"),
        })
        .await
        .unwrap();
        let clock = Clock::system();
        let keys = Keys::load(&store, config.key_grace, &clock).await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox::start(
            Arc::new(Recorder(tx)),
            metrics.clone(),
            Duration::from_secs(5),
        );
        let limiter = |name, window, limit| {
            RateLimiter::new(name, window, limit, store.clone(), clock.clone())
        };
        let rl = &config.rate_limit;
        let rp = RelyingParty::new(&config.rp_id, &config.rp_name, &config.sites, |_| true);
        Rig {
            client: limiter("client", rl.window, rl.per_client),
            email: limiter("email", rl.window, rl.per_email),
            code: limiter(
                "code",
                Duration::from_secs(24 * 3600),
                rl.codes_per_email_per_day,
            )
            .sliding(),
            sessions: Sessions::new(
                config.session.clone(),
                store.clone(),
                Arc::new(true.into()),
                clock.clone(),
            ),
            _dir: dir,
            config,
            store,
            keys,
            clock,
            metrics,
            pages: Pages::new(),
            outbox,
            mail: Mutex::new(rx),
            rp,
            waiters: Waiters::new(100),
        }
    }

    pub(crate) fn sign_in(&self) -> SignIn<'_> {
        SignIn {
            store: &self.store,
            keys: &self.keys,
            clock: &self.clock,
            sessions: &self.sessions,
            metrics: &self.metrics,
            pages: &self.pages,
            outbox: &self.outbox,
            link: &self.config.magic_link,
            signup: &self.config.signup,
            limits: Limits {
                client: &self.client,
                email: &self.email,
                code: &self.code,
            },
            waiters: &self.waiters,
            device: None,
        }
    }

    pub(crate) fn ceremonies(&self) -> Ceremonies<'_> {
        Ceremonies {
            passkeys: &self.rp,
            config: &self.config,
            store: &self.store,
            keys: &self.keys,
            clock: &self.clock,
            metrics: &self.metrics,
            pages: &self.pages,
            outbox: &self.outbox,
            sign_in: self.sign_in(),
        }
    }

    /// Sign `email` in by its link on site 0; the live session.
    pub(crate) async fn signed_in(&self, email: &str) -> Arc<LiveSession> {
        let m = self.ask(email).await;
        let done = self
            .sign_in()
            .consume_link(self.site(0), &m.token)
            .await
            .unwrap();
        self.sessions
            .check(&done.session.cookie_plain)
            .await
            .unwrap()
    }

    pub(crate) fn site(&self, i: usize) -> &Site {
        &self.config.sites[i]
    }

    /// Ask for a sign-in on site 0 for `email` and issue it; the pending id.
    pub(crate) async fn ask_only(&self, email: &str) -> String {
        let email = Email::parse(email).unwrap();
        let id = self.sign_in().request(&email, CLIENT).await.unwrap();
        let rd = ReturnTo::root(self.site(0));
        self.sign_in()
            .issue(
                self.site(0),
                email,
                rd,
                id.clone(),
                Asker::of(Some(FIREFOX), CLIENT),
            )
            .await;
        id.to_string()
    }

    /// Ask, issue and read the mail.
    pub(crate) async fn ask(&self, email: &str) -> Mailed {
        let pending_id = self.ask_only(email).await;
        let mail = tokio::time::timeout(Duration::from_secs(10), self.mail.lock().await.recv())
            .await
            .expect("the sign-in mail within 10 s")
            .unwrap();
        assert_eq!(mail.to.as_str(), email);
        let link = mail
            .text
            .lines()
            .find(|l| l.starts_with("https://"))
            .expect("a link line");
        let token = link.split_once("token=").unwrap().1.to_string();
        let code = mail
            .text
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 6)
            .expect("a six-digit code")
            .to_string();
        Mailed {
            pending_id,
            token,
            code,
        }
    }

    pub(crate) async fn state(&self, pending_id: &str) -> PendingState {
        let p = self.store.pending(pending_id).await.unwrap().unwrap();
        PendingState::of(&p, self.clock.now(), self.config.magic_link.code_attempts)
    }

    pub(crate) fn counted(&self, method: &str, result: &str) -> u64 {
        self.metrics
            .verifications
            .with_label_values(&[method, result])
            .get()
    }

    pub(crate) async fn add_user(&self, email: &str) {
        self.store
            .add_user(&User {
                id: format!("u_{email}").into(),
                email: Email::parse(email).unwrap(),
                name: None,
                groups: vec![],
                disabled: false,
                created_at: self.clock.now(),
            })
            .await
            .unwrap();
    }
}

pub(crate) fn wrong(code: &str) -> String {
    let last = (code.as_bytes()[5] - b'0' + 1) % 10;
    format!("{}{last}", &code[..5])
}
