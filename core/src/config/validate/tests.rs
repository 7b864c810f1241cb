//! The validator's rules, with a made-up world outside the file: host names
//! resolve where the test says, and certificate files are good or bad by
//! name. No DNS, no files.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::config::{
    AccessLogTarget, Config, ConfigErrors, Outside, Signup, StoreConfig, UpstreamAddr,
};
use crate::tls::CertFiles;

#[derive(Default)]
struct World {
    asked: RefCell<Vec<String>>,
}

impl Outside for World {
    fn resolve(&self, host_port: &str) -> io::Result<Option<SocketAddr>> {
        self.asked.borrow_mut().push(host_port.to_string());
        match host_port {
            "app.internal:3000" => Ok(Some("10.0.0.5:3000".parse().unwrap())),
            "localhost:8080" => Ok(Some("127.0.0.1:8080".parse().unwrap())),
            "empty.internal:3000" => Ok(None),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        }
    }

    fn certificates(&self, path: &Path) -> Result<(), String> {
        match path.to_string_lossy().contains("bad") {
            true => Err(format!("{} holds no PEM certificate", path.display())),
            false => Ok(()),
        }
    }

    fn key_pair(&self, files: &CertFiles) -> Result<(), String> {
        if files.cert.to_string_lossy().contains("bad") {
            return Err(format!("cannot read {}", files.cert.display()));
        }
        if files.key.to_string_lossy().contains("bad") {
            return Err(format!(
                "{} is not a PEM private key file",
                files.key.display()
            ));
        }
        if files.key.to_string_lossy().contains("other") {
            return Err(format!(
                "the key in {} does not belong to the certificate in {}",
                files.key.display(),
                files.cert.display()
            ));
        }
        Ok(())
    }
}

const SITE: &str = r#"
[[site]]
public_url = "https://wiki.example.com"
upstream = ["127.0.0.1:3000"]
"#;

fn load(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml_with(text, &World::default())
}

/// The key paths of the problems `text` has, in order.
fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => vec![],
        Err(e) => e.0.into_iter().map(|e| e.path).collect(),
    }
}

/// The message given for `path`.
fn message(text: &str, path: &str) -> String {
    let Err(errors) = load(text) else {
        panic!("the config was accepted, {path} expected to be refused");
    };
    let found = errors.0.iter().find(|e| e.path == path);
    found
        .map(|e| e.message.clone())
        .unwrap_or_else(|| panic!("no problem at {path}: {errors}"))
}

#[test]
fn defaults_fill_what_the_file_leaves_out() {
    let c = load(SITE).unwrap();
    assert_eq!(c.magic_link.ttl, Duration::from_secs(15 * 60));
    assert_eq!(c.magic_link.code_attempts, 5);
    assert_eq!(c.rate_limit.per_email, 5);
    assert_eq!(c.rate_limit.per_client, 30);
    assert_eq!(c.rate_limit.codes_per_email_per_day, 20);
    assert_eq!(c.admin_listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.upgrade_socket, Path::new("/run/sesame/upgrade.sock"));
    assert!(matches!(c.signup, Signup::Closed));
    assert_eq!(
        c.store,
        StoreConfig::Sqlite {
            path: "/var/lib/sesame/sesame.db".into()
        }
    );
    let s = &c.sites[0];
    assert_eq!(
        (s.name.as_str(), s.host.as_str()),
        ("site0", "wiki.example.com")
    );
    assert_eq!(s.origin, "https://wiki.example.com");
    assert!(s.secure && s.sign_assertion && !s.require_passkey);
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let got = problems(
        r#"
        [magic_link]
        ttl = "soon"
        code_attempts = 0
        [[site]]
        public_url = "http://wiki.example.com"
        upstream = []
        [[site]]
        public_url = "https://git.example.com/path"
        upstream = ["nowhere.internal:3000"]
        public_paths = ["health"]
        allow_emails = ["not an address"]
        [[site.rule]]
        action = "deny"
        "#,
    );
    for path in [
        "magic_link.ttl",
        "magic_link.code_attempts",
        "site[0].public_url",
        "site[0].upstream",
        "site[1].public_url",
        "site[1].upstream[0]",
        "site[1].public_paths[0]",
        "site[1].allow_emails[0]",
        "site[1].rule[0].path",
    ] {
        assert!(got.iter().any(|p| p == path), "{path} missing from {got:?}");
    }
}

#[test]
fn plain_http_only_for_this_machine() {
    for local in [
        "http://localhost:8080",
        "http://app.localhost",
        "http://127.0.0.1:9000",
    ] {
        let text = format!("[[site]]\npublic_url = \"{local}\"\nupstream = [\"127.0.0.1:1\"]\n");
        let c = load(&text).unwrap_or_else(|e| panic!("{local}: {e}"));
        assert!(!c.sites[0].secure, "{local}");
    }
    let text = "[[site]]\npublic_url = \"http://wiki.example.com\"\nupstream = [\"127.0.0.1:1\"]\n";
    assert_eq!(
        message(text, "site[0].public_url"),
        "must be https unless the host is localhost"
    );
}

#[test]
fn host_names_are_looked_up_through_outside_and_ip_addresses_are_not() {
    let world = World::default();
    let c = Config::from_toml_with(
        r#"
        [[site]]
        public_url = "https://wiki.example.com"
        upstream = ["app.internal:3000", "10.0.0.9:3000"]
        "#,
        &world,
    )
    .unwrap();
    assert_eq!(
        c.sites[0].upstreams,
        vec![
            UpstreamAddr {
                name: Some(("app.internal".into(), 3000)),
                addr: "10.0.0.5:3000".parse().unwrap(),
            },
            UpstreamAddr {
                name: None,
                addr: "10.0.0.9:3000".parse().unwrap(),
            },
        ]
    );
    assert!(
        !world
            .asked
            .borrow()
            .iter()
            .any(|a| a.starts_with("10.0.0.9")),
        "an address was looked up: {:?}",
        world.asked.borrow()
    );
    let upstream = |u: &str| {
        let text =
            format!("[[site]]\npublic_url = \"https://a.example.com\"\nupstream = [\"{u}\"]\n");
        message(&text, "site[0].upstream[0]")
    };
    assert!(upstream("nowhere.internal:3000").contains("cannot be looked up"));
    assert!(upstream("empty.internal:3000").contains("has no address"));
    assert!(upstream("app.internal").contains("not an address of the form host:port"));
}

#[test]
fn certificate_files_are_checked_through_outside_and_named_by_key() {
    let tls = |cert: &str, key: &str| {
        format!("[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"{cert}\"\nkey = \"{key}\"\n{SITE}")
    };
    let c = load(&tls("good.pem", "good.key")).unwrap();
    assert_eq!(c.tls[0].certs[0].cert, Path::new("good.pem"));
    assert!(message(&tls("bad.pem", "good.key"), "server.tls[0].cert").contains("bad.pem"));
    assert!(message(&tls("good.pem", "bad.key"), "server.tls[0].key").contains("bad.key"));
    // A key of another certificate: the pair is named at the certificate.
    assert!(message(&tls("good.pem", "other.key"), "server.tls[0].cert").contains("other.key"));
    let no_key =
        format!("[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"good.pem\"\n{SITE}");
    assert_eq!(
        message(&no_key, "server.tls[0].key"),
        "is required: a PEM file"
    );
    // Not on a plain listener's address.
    let clash = format!(
        "[server]\nlisten = [\"127.0.0.1:8443\"]\n[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"good.pem\"\nkey = \"good.key\"\n{SITE}"
    );
    assert!(message(&clash, "server.tls[0].listen").contains("already a plain listener"));

    let upstream_ca = |ca: &str| {
        format!(
            "[[site]]\npublic_url = \"https://a.example.com\"\nupstream = [\"127.0.0.1:1\"]\nupstream_tls = true\nupstream_sni = \"app.internal\"\nupstream_ca = \"{ca}\"\n"
        )
    };
    assert!(load(&upstream_ca("ca.pem")).is_ok());
    assert!(message(&upstream_ca("bad-ca.pem"), "site[0].upstream_ca").contains("bad-ca.pem"));

    let mail_ca =
        |url: &str, ca: &str| format!("[mail]\nsmtp_url = \"{url}\"\nca_file = \"{ca}\"\n{SITE}");
    assert!(load(&mail_ca("smtps://mail.example.com", "ca.pem")).is_ok());
    assert!(message(
        &mail_ca("smtps://mail.example.com", "bad.pem"),
        "mail.ca_file"
    )
    .contains("bad.pem"));
    // A pinned CA with a transport that may fall back to plain text.
    assert!(message(
        &mail_ca("smtp://mail.example.com", "ca.pem"),
        "mail.ca_file"
    )
    .contains("does not require TLS"));
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key() {
    let typo = format!("[magic_link]\nttll = \"5m\"\n{SITE}");
    let errors = load(&typo).err().unwrap();
    assert!(errors.0[0].path.starts_with("magic_link"), "{errors}");
    assert!(errors.0[0].message.contains("ttll"), "{errors}");
    let wrong = format!("[rate_limit]\nper_email = \"five\"\n{SITE}");
    assert_eq!(
        load(&wrong).err().unwrap().0[0].path,
        "rate_limit.per_email"
    );
}

#[test]
fn two_sites_may_not_answer_one_host() {
    let got = problems(&format!("{SITE}{}", SITE.replace("3000", "3001")));
    assert!(got.iter().any(|p| p.starts_with("site[1]")), "{got:?}");
}

#[test]
fn a_portal_is_an_origin_of_its_own_that_passkeys_live_on() {
    let portal = |extra: &str| {
        format!("[portal]\npublic_url = \"https://auth.example.com\"\n{extra}\n{SITE}")
    };
    let c = load(&portal("")).unwrap();
    let p = c.portal.as_ref().unwrap();
    assert_eq!(
        (p.host.as_str(), p.origin.as_str()),
        ("auth.example.com", "https://auth.example.com")
    );
    assert!(p.upstreams.is_empty() && p.secure);
    assert_eq!(
        c.rp_id, "auth.example.com",
        "rp_id defaults to the portal's host"
    );
    // The parent domain covers the portal; another domain does not.
    let c = load(&portal("[auth]\nrp_id = \"example.com\"")).unwrap();
    assert_eq!(c.rp_id, "example.com");
    assert!(
        message(&portal("[auth]\nrp_id = \"example.org\""), "auth.rp_id")
            .contains("auth.example.com")
    );
    // One session per site from the portal: no shared cookie domain.
    assert!(message(
        &portal("[session]\ncookie_domain = \"example.com\""),
        "session.cookie_domain"
    )
    .contains("[portal]"));
    // An origin, https, of its own.
    for (url, why) in [
        ("https://auth.example.com/login", "without a path"),
        ("http://auth.example.com", "https"),
        ("https://wiki.example.com", "host of its own"),
        ("auth.example.com", "not a URL"),
    ] {
        let text = format!("[portal]\npublic_url = \"{url}\"\n{SITE}");
        assert!(message(&text, "portal.public_url").contains(why), "{url}");
    }
    assert_eq!(
        problems(&format!("[portal]\n{SITE}")),
        ["portal.public_url"]
    );
    // Without it, nothing changes.
    assert!(load(SITE).unwrap().portal.is_none());
}

#[test]
fn oidc_clients_need_a_portal_a_hash_and_exact_https_redirects() {
    let hash = crate::oidc::secret::hash("a-long-enough-secret").unwrap();
    let with = |portal: bool, client: &str| {
        let p = if portal {
            "[portal]\npublic_url = \"https://auth.example.com\"\n"
        } else {
            ""
        };
        format!("{p}[[oidc.client]]\n{client}\n{SITE}")
    };
    let good = format!(
        "id = \"grafana\"\nsecret = \"{hash}\"\nredirect_uris = [\"https://g.example.com/cb\"]"
    );
    let c = load(&with(true, &good)).unwrap();
    assert_eq!(c.oidc_clients[0].id, "grafana");
    assert!(!c.oidc_clients[0].is_public());
    assert!(
        !format!("{:?}", c.oidc_clients[0]).contains("argon2"),
        "no hash in Debug"
    );
    assert!(message(&with(false, &good), "oidc.client").contains("[portal]"));
    // A client of the device grant alone needs no redirect URI; others do.
    let cli = load(&with(
        true,
        "id = \"cli\"\npublic = true\ndevice_grant = true",
    ))
    .unwrap();
    assert!(cli.oidc_clients[0].device_grant);
    assert!(message(
        &with(true, "id = \"cli\"\npublic = true"),
        "oidc.client[0].redirect_uris"
    )
    .contains("at least one"));
    assert!(message(
        &with(
            true,
            "id = \"x\"\nredirect_uris = [\"https://g.example.com/cb\"]"
        ),
        "oidc.client[0].secret"
    )
    .contains("hash-secret"));
    assert!(message(
        &with(
            true,
            "id = \"x\"\nsecret = \"plain\"\nredirect_uris = [\"https://g.example.com/cb\"]"
        ),
        "oidc.client[0].secret"
    )
    .contains("PHC"));
    assert!(message(&with(true, &format!("id = \"x\"\npublic = true\nsecret = \"{hash}\"\nredirect_uris = [\"https://g.example.com/cb\"]")), "oidc.client[0].secret").contains("public"));
    for (uri, why) in [
        ("https://*.example.com/cb", "wildcards"),
        ("http://g.example.com/cb", "https"),
        ("/cb", "absolute"),
    ] {
        let text = with(
            true,
            &format!("id = \"x\"\npublic = true\nredirect_uris = [\"{uri}\"]"),
        );
        assert!(
            message(&text, "oidc.client[0].redirect_uris[0]").contains(why),
            "{uri}"
        );
    }
    let alg = format!("{good}\nid_token_signed_response_alg = \"HS256\"");
    assert!(message(
        &with(true, &alg),
        "oidc.client[0].id_token_signed_response_alg"
    )
    .contains("ES256"));
    let twice = format!("{good}\n[[oidc.client]]\n{good}");
    assert!(message(&with(true, &twice), "oidc.client[1].id").contains("already"));
}

#[test]
fn the_upgrade_socket_is_an_absolute_path_a_unix_socket_can_have() {
    let with = |path: &str| format!("[server]\nupgrade_socket = {path:?}\n{SITE}");
    assert_eq!(
        load(&with("/var/lib/sesame/up.sock"))
            .unwrap()
            .upgrade_socket,
        Path::new("/var/lib/sesame/up.sock")
    );
    for bad in ["up.sock", "/run/sesame/", &format!("/{}", "a".repeat(107))] {
        assert_eq!(problems(&with(bad)), ["server.upgrade_socket"], "{bad}");
    }
    assert!(message(&with("run/up.sock"), "server.upgrade_socket").contains("absolute"));
}

#[test]
fn the_access_log_is_a_file_in_a_directory_that_exists_or_standard_output() {
    let log = |v: &str| format!("[server]\naccess_log = {v:?}\n{SITE}");
    assert_eq!(load(SITE).unwrap().access_log, None);
    assert_eq!(
        load(&log("-")).unwrap().access_log,
        Some(AccessLogTarget::Stdout)
    );
    let dir = std::env::temp_dir();
    let file = dir.join("sesame-access.log");
    assert_eq!(
        load(&log(file.to_str().unwrap())).unwrap().access_log,
        Some(AccessLogTarget::File(file))
    );
    assert!(message(&log("access.log"), "server.access_log").contains("absolute path"));
    assert!(
        message(&log("/no/such/dir/access.log"), "server.access_log")
            .contains("directory /no/such/dir does not exist")
    );
    assert!(message(&log(dir.to_str().unwrap()), "server.access_log").contains("is a directory"));
}
