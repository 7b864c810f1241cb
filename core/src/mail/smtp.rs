//! SMTP transport through lettre (async, tokio): `smtp://` (plain, or
//! STARTTLS with `?tls=required`/`opportunistic`), `smtps://` (implicit TLS),
//! credentials from the URL.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{MailError, Mailer, OutgoingMail};

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    /// `ca_file`: PEM certificates to trust for the server, besides the
    /// system's store.
    pub fn new(
        url: &str,
        ca_file: Option<&Path>,
        from: Mailbox,
        timeout: Duration,
    ) -> Result<SmtpMailer, MailError> {
        // Name the TLS crypto provider, so that TLS works however many
        // providers the dependency graph happens to enable.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let transport_err = |e: &dyn std::fmt::Display| MailError::Transport(e.to_string());
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| transport_err(&e))?
            .timeout(Some(timeout));
        if let Some(ca_file) = ca_file {
            builder = builder.tls(tls_trusting(url, ca_file)?);
        }
        Ok(SmtpMailer {
            transport: builder.build(),
            from,
        })
    }
}

/// The TLS mode `url` asks for (as lettre reads it), trusting `ca_file` too.
fn tls_trusting(url: &str, ca_file: &Path) -> Result<Tls, MailError> {
    let bad = |e: String| MailError::Transport(e);
    let u = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let host = u
        .host_str()
        .ok_or_else(|| bad("no host".into()))?
        .to_string();
    let pem = std::fs::read(ca_file)
        .map_err(|e| bad(format!("cannot read {}: {e}", ca_file.display())))?;
    let ca = Certificate::from_pem(&pem).map_err(|e| bad(format!("{}: {e}", ca_file.display())))?;
    let params = TlsParameters::builder(host)
        .add_root_certificate(ca)
        .build_rustls()
        .map_err(|e| bad(e.to_string()))?;
    let mode = u
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    match (u.scheme(), mode.as_deref()) {
        ("smtps", _) => Ok(Tls::Wrapper(params)),
        ("smtp", Some("required")) => Ok(Tls::Required(params)),
        _ => Err(bad(
            "a CA file needs a URL that requires TLS (smtps:// or ?tls=required)".into(),
        )),
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        let to: Mailbox = mail
            .to
            .as_str()
            .parse()
            .map_err(|e: lettre::address::AddressError| MailError::Message(e.to_string()))?;
        // Message-ID on the sender's domain (not this host's name), and
        // marked as sent by a program (RFC 3834): auto-responders and
        // out-of-office replies leave it alone.
        let message_id = format!("<{}@{}>", crate::random::id(18), self.from.email.domain());
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(message_id))
            .header(AutoSubmitted)
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| MailError::Message(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Transport(e.to_string()))
    }

    async fn check(&self) -> Result<(), MailError> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(MailError::Transport(
                "mail server refused the connection test".into(),
            )),
            Err(e) => Err(MailError::Transport(e.to_string())),
        }
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): a message a program sent,
/// not a person, which no auto-responder answers.
#[derive(Debug, Clone, Copy)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), "auto-generated".to_string())
    }
}
