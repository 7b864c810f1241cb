//! The SMTP sink: a real SMTP server (mailin-embedded) that keeps every
//! message, and the mailbox tests read links and codes from.

use super::*;

#[derive(Clone, Default)]
struct Sink {
    /// `(user, password)` that AUTH PLAIN accepts, if AUTH is offered.
    login: Option<(String, String)>,
    buf: Vec<u8>,
    to: Vec<String>,
    out: Arc<Mutex<Vec<Mail>>>,
}

#[derive(Clone, Debug)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The message as it came over SMTP.
    pub raw: Vec<u8>,
}

impl Mail {
    /// Header `name`'s value as sent (unfolded, trimmed), by a real parser.
    pub fn header(&self, name: &str) -> Option<String> {
        let msg = mail_parser::MessageParser::default().parse(&self.raw)?;
        msg.header_raw(name).map(|v| v.trim().to_string())
    }

    pub fn link(&self) -> String {
        let start = self.text.find("http").expect("a link in the mail");
        self.text[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }

    pub fn code(&self) -> String {
        let i = self.text.find("code").expect("a code in the mail");
        self.text[i..]
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 6)
            .expect("six digits")
            .to_string()
    }

    pub fn token(&self) -> String {
        let link = self.link();
        let url = url::Url::parse(&link).unwrap();
        url.query_pairs()
            .find(|(k, _)| k == "token")
            .unwrap()
            .1
            .into_owned()
    }
}

impl Handler for Sink {
    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> response::Response {
        match &self.login {
            Some((u, p)) if u == user && p == password => response::AUTH_OK,
            _ => response::INVALID_CREDENTIALS,
        }
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> response::Response {
        self.buf.clear();
        self.to = to.to_vec();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> response::Response {
        let msg = mail_parser::MessageParser::default()
            .parse(&self.buf)
            .expect("parsable mail");
        let mail = Mail {
            to: self.to.clone(),
            subject: msg.subject().unwrap_or("").to_string(),
            text: msg.body_text(0).map(|s| s.into_owned()).unwrap_or_default(),
            html: msg.body_html(0).map(|s| s.into_owned()).unwrap_or_default(),
            raw: self.buf.clone(),
        };
        self.out.lock().unwrap().push(mail);
        response::OK
    }
}

#[derive(Clone)]
pub struct MailBox {
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl MailBox {
    pub fn start() -> MailBox {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink {
            out: mails.clone(),
            ..Default::default()
        };
        let mut server = Server::new(sink);
        server
            .with_name("sink.test")
            .with_ssl(SslConfig::None)
            .unwrap()
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        MailBox { addr, mails }
    }

    /// A sink that offers STARTTLS with `cert`/`key` and requires AUTH PLAIN
    /// (which mailin only allows after STARTTLS).
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        user: &str,
        password: &str,
    ) -> MailBox {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink {
            out: mails.clone(),
            login: Some((user.into(), password.into())),
            ..Default::default()
        };
        let mut server = Server::new(sink);
        server
            .with_name("sink.test")
            .with_ssl(SslConfig::SelfSigned {
                cert_path: cert.display().to_string(),
                key_path: key.display().to_string(),
            })
            .unwrap()
            .with_auth(mailin_embedded::AuthMechanism::Plain)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        MailBox { addr, mails }
    }

    /// The plain sink behind implicit TLS (`smtps://`, the port 465 way):
    /// a TLS listener that hands each connection's bytes on to the sink.
    pub async fn start_implicit_tls(cert: &std::path::Path, key: &std::path::Path) -> MailBox {
        let plain = MailBox::start();
        let sink = plain.addr;
        let acceptor = tls_acceptor(cert, key);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut outer) = acceptor.accept(sock).await else {
                        return;
                    };
                    let Ok(mut inner) = tokio::net::TcpStream::connect(sink).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut outer, &mut inner).await;
                });
            }
        });
        MailBox {
            addr,
            mails: plain.mails,
        }
    }

    pub fn all(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Wait for the next mail to `to` (beyond the `seen` ones already taken).
    pub async fn wait_for(&self, to: &str, seen: usize) -> Mail {
        self.wait_for_subject(to, seen, "").await
    }

    /// Wait for the first mail to `to` beyond the `seen` ones whose subject
    /// starts with `subject` (notices about passkeys go to the same address).
    pub async fn wait_for_subject(&self, to: &str, seen: usize, subject: &str) -> Mail {
        // Generous: a failed delivery is retried after 0.5 s and 2 s, and
        // a loaded machine is slow to start with.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            let got = self
                .all()
                .into_iter()
                .filter(|m| m.to.iter().any(|t| t == to))
                .skip(seen)
                .find(|m| m.subject.starts_with(subject));
            if let Some(m) = got {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no mail to {to} (subject {subject:?}) arrived within 20 s");
    }

    pub fn count_to(&self, to: &str) -> usize {
        self.all()
            .iter()
            .filter(|m| m.to.iter().any(|t| t == to))
            .count()
    }
}
