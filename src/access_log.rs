//! `[server] access_log`: one JSON line per request the gateway answers,
//! for a SIEM.
//!
//! A request's thread only fills an [`Entry`] (a few copies and a reference
//! count) and puts it on a bounded queue. A thread of its own formats and
//! writes the lines, and flushes whenever the queue is empty, so a line is
//! out within moments of its request and a burst is written in large
//! writes. No request waits for the disk: a line that finds the queue full
//! is dropped and counted (`sesame_access_log_dropped_total`).
//!
//! No query string is written (it can hold sign-in tokens and handoff
//! codes), nor an email address: the user id names the person.

use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use serde::Serialize;

use crate::config::{AccessLogTarget, SiteId};
use crate::metrics::Outcome;
use crate::session::LiveSession;

/// Lines waiting to be written: about a second of a busy gateway.
const QUEUE: usize = 16_384;

/// The most of a path written, in bytes: with both paths escaped (`"` and
/// `\` double) a line stays under `PIPE_BUF` (4,096 bytes, what a pipe
/// writes whole), and the queue holds at most this much per path (a
/// request line may be a megabyte).
const MAX_PATH: usize = 768;

/// The longest method written as it is: longer ones (no real method is)
/// are written as `"(overlong)"`.
const MAX_METHOD: usize = 20;

/// `method`, if it is no longer than [`MAX_METHOD`] (a clone of a
/// standard method allocates nothing).
pub fn method(method: &http::Method) -> Option<http::Method> {
    (method.as_str().len() <= MAX_METHOD).then(|| method.clone())
}

/// `path`, cut to [`MAX_PATH`] bytes (at a character boundary) with `…`
/// marking the cut.
pub fn clipped(path: &str) -> String {
    if path.len() <= MAX_PATH {
        return path.to_string();
    }
    let mut end = MAX_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

/// One request, as the gateway saw it.
pub struct Entry {
    /// When it was answered (milliseconds since 1970).
    pub at_ms: i64,
    /// `None` for a host no site answers.
    pub site: Option<SiteId>,
    /// `None`: longer than any real method (see [`method`]).
    pub method: Option<http::Method>,
    /// The path as the client sent it, without the query, [`clipped`].
    pub path: String,
    /// The path the app received, if the request went to the app with
    /// another spelling (normalised for the site's path rules).
    pub app_path: Option<String>,
    /// The status sent to the client (`None`: the connection closed first).
    pub status: Option<u16>,
    pub outcome: Outcome,
    /// The session the request carried, if it was let through with one or
    /// refused for who it is.
    pub user: Option<Arc<LiveSession>>,
    /// The client's address (behind a trusted proxy, the one it names).
    pub client: IpAddr,
    /// The app's address, if the request went to the app.
    pub upstream: Option<SocketAddr>,
    /// From reading the request to logging it.
    pub duration: Duration,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    site: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_path: Option<&'a str>,
    status: Option<u16>,
    outcome: &'static str,
    user: Option<&'a str>,
    client: IpAddr,
    upstream: Option<SocketAddr>,
    duration_ms: f64,
}

/// What the writing thread is sent.
enum Msg {
    Line(Entry),
    /// Write out what came before; then say so.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The queue to the writing thread.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Msg>,
    dropped: IntCounter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

impl AccessLog {
    /// Open `target` (a file is appended to, and created if missing) and
    /// start the thread writing to it; `sites`: the sites' names, by id.
    pub fn open(
        target: &AccessLogTarget,
        sites: Vec<String>,
        dropped: IntCounter,
    ) -> Result<AccessLog, String> {
        // Flushed at line ends only: to a file opened for appending each
        // write lands whole, and to a pipe (the journal) a write of at most
        // 4,096 bytes does, even while a reload's two processes both write.
        let (out, buffer): (Box<dyn Write + Send>, usize) = match target {
            AccessLogTarget::Stdout => (Box::new(std::io::stdout()), 4096),
            AccessLogTarget::File(path) => (
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| {
                            format!("server.access_log: cannot open {}: {e}", path.display())
                        })?,
                ),
                64 * 1024,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("sesame-access-log".into())
            .spawn(move || write_lines(rx, BufWriter::with_capacity(buffer, out), &sites))
            .map_err(|e| format!("server.access_log: cannot start its thread: {e}"))?;
        Ok(AccessLog { tx, dropped })
    }

    /// Queue `entry`'s line; never waits.
    pub fn log(&self, entry: Entry) {
        if self.tx.try_send(Msg::Line(entry)).is_err() {
            self.dropped.inc();
        }
    }

    /// Wait, up to `limit`, until every line queued so far is written (as
    /// the process exits).
    pub fn flush(&self, limit: Duration) {
        let until = std::time::Instant::now() + limit;
        let (done, written) = std::sync::mpsc::channel();
        let mut msg = Msg::Flush(done);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(std::sync::mpsc::TrySendError::Full(m))
                    if std::time::Instant::now() < until =>
                {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(until.saturating_duration_since(std::time::Instant::now()));
    }
}

/// Until every sender is gone: write each entry's line, flushing whenever
/// none is waiting.
fn write_lines(rx: Receiver<Msg>, mut out: BufWriter<Box<dyn Write + Send>>, sites: &[String]) {
    let mut failing = false;
    let mut text = Vec::with_capacity(1024);
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => {
                note(&mut failing, out.flush());
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let entry = match msg {
            Msg::Line(e) => e,
            Msg::Flush(done) => {
                note(&mut failing, out.flush());
                let _ = done.send(());
                continue;
            }
        };
        // One line, one write into the buffer: the buffer goes out at line
        // ends.
        text.clear();
        let wrote = serde_json::to_writer(&mut text, &line(&entry, sites))
            .map_err(std::io::Error::from)
            .and_then(|()| {
                text.push(b'\n');
                out.write_all(&text)
            });
        note(&mut failing, wrote);
    }
    let _ = out.flush();
}

/// Log a write failure once, and the recovery.
fn note(failing: &mut bool, r: std::io::Result<()>) {
    match (r, *failing) {
        (Err(e), false) => {
            tracing::error!(error = %e, "access log: cannot write; lines are lost until it can");
            *failing = true;
        }
        (Ok(()), true) => {
            tracing::info!("access log: writing again");
            *failing = false;
        }
        _ => {}
    }
}

fn line<'a>(e: &'a Entry, sites: &'a [String]) -> Line<'a> {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(e.at_ms.max(0) as u64);
    Line {
        time: humantime::format_rfc3339_millis(at).to_string(),
        site: e
            .site
            .and_then(|id| sites.get(id.index()))
            .map(String::as_str),
        method: e.method.as_ref().map_or("(overlong)", http::Method::as_str),
        path: &e.path,
        app_path: e.app_path.as_deref(),
        status: e.status,
        outcome: e.outcome.label(),
        user: e.user.as_ref().map(|l| l.record.user_id.as_str()),
        client: e.client,
        upstream: e.upstream,
        duration_ms: (e.duration.as_secs_f64() * 1e6).round() / 1e3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_at_a_character_boundary() {
        assert_eq!(clipped("/docs/a"), "/docs/a");
        let long = format!("/{}", "é".repeat(1000));
        let cut = clipped(&long);
        assert!(cut.len() <= MAX_PATH + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(long.starts_with(cut.trim_end_matches('…')));
    }
}
