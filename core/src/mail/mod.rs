//! Outgoing mail: the `Mailer` trait, its SMTP (lettre) and console
//! transports, and the outbox that sends from a queue so that no request
//! ever waits on a mail server.
//!
//! What a message says is composed elsewhere (`magic_link::compose`).

mod smtp;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Semaphore};

use crate::config::{MailConfig, MailTransport};
use crate::email::Email;
use crate::metrics::Metrics;

pub use smtp::SmtpMailer;

/// One message. Its body holds a live link and code, so `Debug` shows only
/// the recipient and subject.
#[derive(Clone)]
pub struct OutgoingMail {
    pub to: Email,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail transport: {0}")]
    Transport(String),
    #[error("mail message: {0}")]
    Message(String),
    #[error("mail server did not answer in time")]
    Timeout,
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError>;
    /// Whether the transport can be reached now (for `/readyz`).
    async fn check(&self) -> Result<(), MailError>;
}

/// Prints each message on standard output: for trying Sesame out.
pub struct ConsoleMailer;

#[async_trait]
impl Mailer for ConsoleMailer {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        println!(
            "\n----- sign-in email to {} -----\nSubject: {}\n\n{}\n-----------------------------------\n",
            mail.to, mail.subject, mail.text
        );
        Ok(())
    }

    async fn check(&self) -> Result<(), MailError> {
        Ok(())
    }
}

pub fn mailer_for(config: &MailConfig) -> Result<Arc<dyn Mailer>, MailError> {
    Ok(match &config.transport {
        MailTransport::Console => Arc::new(ConsoleMailer),
        MailTransport::Smtp { url, ca_file } => Arc::new(SmtpMailer::new(
            url,
            ca_file.as_deref(),
            config.from.clone(),
            config.timeout,
        )?),
    })
}

/// The queue in front of a [`Mailer`]. `enqueue` never waits.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<OutgoingMail>,
}

const QUEUE: usize = 1024;
const ATTEMPTS: u32 = 3;
const PARALLEL: usize = 4;

impl Outbox {
    /// Start the outbox worker on the current runtime.
    pub fn start(mailer: Arc<dyn Mailer>, metrics: Arc<Metrics>, timeout: Duration) -> Outbox {
        let (tx, mut rx) = mpsc::channel::<OutgoingMail>(QUEUE);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(PARALLEL));
            while let Some(mail) = rx.recv().await {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let mailer = mailer.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let timer = metrics.mail_delivery_seconds.start_timer();
                    deliver(&*mailer, &metrics, &mail, timeout).await;
                    drop(timer);
                    metrics.mail_outbox.dec();
                    drop(permit);
                });
            }
        });
        Outbox { tx }
    }

    /// Queue a message; false (and counted) if the queue is full.
    pub fn enqueue(&self, mail: OutgoingMail, metrics: &Metrics) -> bool {
        // Counted before it is queued: the worker may take it off at once,
        // and a process on its way out must never see it uncounted.
        metrics.mail_outbox.inc();
        match self.tx.try_send(mail) {
            Ok(()) => true,
            Err(_) => {
                metrics.mail_outbox.dec();
                metrics.mail_failed.inc();
                tracing::error!("mail queue is full; a sign-in email was dropped");
                false
            }
        }
    }
}

async fn deliver(mailer: &dyn Mailer, metrics: &Metrics, mail: &OutgoingMail, timeout: Duration) {
    for attempt in 1..=ATTEMPTS {
        let result = match tokio::time::timeout(timeout, mailer.send(mail)).await {
            Ok(r) => r,
            Err(_) => Err(MailError::Timeout),
        };
        match result {
            Ok(()) => {
                metrics.mail_sent.inc();
                tracing::info!(target: "sesame::audit", event = "mail_sent", to_domain = mail.to.domain());
                return;
            }
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "sending sign-in email failed; retrying");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt * attempt))).await;
            }
            Err(e) => {
                metrics.mail_failed.inc();
                tracing::error!(target: "sesame::audit", event = "mail_failed", to_domain = mail.to.domain(), error = %e);
            }
        }
    }
}
