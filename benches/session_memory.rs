//! What a cached session costs in memory: the heap bytes held per session
//! once it is in the session cache, against the bytes of its own text (the
//! session id, its hash, the user's id, email, name and groups), measured in
//! the same run. Then the same for the signed assertion kept with it.
//!
//! `cargo bench --bench session_memory` (a SQLite store in a temporary
//! folder; about a minute). Goal (issue 14): at most 512 bytes per cached
//! session beyond its text. Bytes are what the program asks the allocator
//! for; the allocator's own rounding comes on top.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use sesame::app::App;
use sesame::clock::Clock;
use sesame::config::{Config, SiteId};
use sesame::store::{AuthMethod, User};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Sessions measured, after `WARM` that set up the cache's fixed parts.
const SESSIONS: usize = 5_000;
const WARM: usize = 200;
const GOAL: f64 = 512.0;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config::from_toml(&format!(
        r#"
[store]
url = "sqlite://{}/memory.db"
[mail]
transport = "console"
[[site]]
public_url = "https://wiki.example.com"
upstream = ["127.0.0.1:3000"]
"#,
        dir.path().display()
    ))
    .unwrap();
    let app = rt.block_on(App::build(config, Clock::system())).unwrap();

    eprintln!("creating {} users with a session each", WARM + SESSIONS);
    let mut plains = Vec::new();
    let mut text = Vec::new();
    for i in 0..WARM + SESSIONS {
        let user = User {
            id: format!("u_{i:07}").into(),
            email: sesame::email::Email::parse(&format!("person{i}@example.com")).unwrap(),
            name: Some(format!("Person {i}")),
            groups: vec!["staff".into(), format!("team-{}", i % 40)],
            disabled: false,
            created_at: 0,
        };
        rt.block_on(app.store.add_user(&user)).unwrap();
        let s = rt
            .block_on(app.sessions.create(&user, AuthMethod::MagicLink))
            .unwrap()
            .expect("the user exists");
        let r = &s.record;
        let id = s.cookie_plain.split_once('.').unwrap().0;
        text.push(
            id.len()
                + r.id_hash.len()
                + r.user_id.len()
                + r.email.as_str().len()
                + r.name.as_ref().map_or(0, String::len)
                + r.groups.iter().map(String::len).sum::<usize>(),
        );
        plains.push(s.cookie_plain);
    }
    // As a proxied request does: check, then take the identity headers.
    let check = |plain: &String| {
        let live = rt
            .block_on(app.sessions.check(plain))
            .expect("a live session");
        drop(live.values.user());
        live
    };
    let mut held = Vec::with_capacity(WARM + SESSIONS);
    for p in &plains[..WARM] {
        held.push(check(p));
    }
    app.sessions.cached();
    // Each is looked up (and so cached) once; the Arcs kept here are the
    // cache's own, not copies, in room reserved before.
    let before = LIVE.load(Relaxed);
    for p in &plains[WARM..] {
        held.push(check(p));
    }
    let cached = app.sessions.cached();
    let after = LIVE.load(Relaxed);
    assert_eq!(cached as usize, WARM + SESSIONS, "every session is cached");
    let per_session = (after - before) as f64 / SESSIONS as f64;
    let own_text = text[WARM..].iter().sum::<usize>() as f64 / SESSIONS as f64;

    let site = SiteId::new(0);
    for live in &held[..WARM] {
        app.assertion(site, live);
    }
    let before = LIVE.load(Relaxed);
    let mut assertion_len = 0;
    for live in &held[WARM..] {
        let a = app.assertion(site, live).expect("assertions are on");
        assertion_len += a.header.len();
    }
    let after = LIVE.load(Relaxed);
    let per_assertion = (after - before) as f64 / SESSIONS as f64;
    let assertion_text = assertion_len as f64 / SESSIONS as f64;

    eprintln!(
        "sizes: LiveSession {} SessionRecord {} IdentityValues {} HeaderValue {}",
        std::mem::size_of::<sesame::session::LiveSession>(),
        std::mem::size_of::<sesame::store::SessionRecord>(),
        std::mem::size_of::<sesame::session::IdentityValues>(),
        std::mem::size_of::<http::HeaderValue>()
    );
    let overhead = per_session - own_text;
    println!("| per cached session ({SESSIONS} sessions) | bytes |");
    println!("|---|---|");
    println!("| held in memory | {per_session:.0} |");
    println!("| its own text (the baseline) | {own_text:.0} |");
    println!(
        "| beyond its text | {overhead:.0} ({:.2}x the text; goal <= {GOAL:.0}: {}) |",
        overhead / own_text,
        if overhead <= GOAL { "met" } else { "not met" }
    );
    println!("| its signed assertion for one site, held | {per_assertion:.0} |");
    println!("| the assertion header's own length | {assertion_text:.0} |");
    drop(held);
}
