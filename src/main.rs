//! The `sesame` command line. Parsing arguments and printing only; all
//! behaviour lives in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sesame::admin_cli as cli;
use sesame::config::Config;
use sesame::store;

/// mimalloc: fewer cycles per request than glibc's malloc under the proxy's
/// small, short-lived allocations (the load harness gives its reference
/// proxy the same allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `sesame --version`: the package version and the commit it was built from
/// (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SESAME_COMMIT"), ")");

#[derive(Parser)]
#[command(
    name = "sesame",
    version = VERSION,
    about = "Passwordless authentication gateway: email magic links, codes and passkeys in front of your apps",
    after_help = "\
Examples:
  sesame demo                                   try it on http://localhost:8080
  sesame check-config -c /etc/sesame/sesame.toml
  sesame run -c /etc/sesame/sesame.toml
  sesame user add alice@example.com --name Alice --group admins

Every command but `demo` reads one config file, given with -c (default for the
admin commands: /etc/sesame/sesame.toml); the admin commands use its [store].
`sesame COMMAND --help` says more. Docs: docs/ in the repository."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in the foreground (SIGTERM: graceful stop; SIGUSR2: upgrade).
    #[command(after_help = "\
Reads the whole config file. Logs go to stderr (SESAME_LOG_FORMAT=json for JSON
lines, RUST_LOG to filter).

SIGUSR2 upgrades without dropping a request: the binary now at the path this
one was started from takes the listening sockets over (server.upgrade_socket)
and this process exits once its open requests are answered. If the new one
cannot start, this one goes on serving. --upgrade-from does the same by hand.
SIGHUP reloads the config the same way: a new process reads the file and
takes over only if it is valid.

Examples:
  sesame run -c /etc/sesame/sesame.toml
  sesame run -c /etc/sesame/sesame.toml --upgrade-from 4242")]
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// Take the listening sockets over from the Sesame running as this
        /// process id, which then finishes its requests and exits.
        #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(2..=i32::MAX as i64))]
        upgrade_from: Option<u32>,
    },
    /// Try Sesame on localhost: embedded demo config, console mail, demo app.
    #[command(after_help = "\
Reads no file: the config is conf/demo.toml, built in. Open http://localhost:8080
and sign in with any address; the email is printed here. State is kept in
./sesame-demo/, metrics at http://127.0.0.1:9090/metrics.

Example:
  sesame demo")]
    Demo,
    /// Validate a config file; non-zero exit with every problem listed.
    #[command(after_help = "\
Reads the whole config file, and the files it names (certificates, keys); looks
up upstream host names. Starts nothing and writes nothing.

Example:
  sesame check-config -c /etc/sesame/sesame.toml")]
    CheckConfig {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a deployment: config, store, mail, upstreams, bypasses, certificates, risky settings.
    #[command(after_help = "\
Prints a checklist, each line pass, WARN or FAIL with what to do, and exits
non-zero if any line failed (1) or, with --strict, warned (2). Changes nothing:
the store is only read, mail and upstreams only connected to (unless
--send-test-mail is given). Run it as the user Sesame runs as, on its host.

Examples:
  sesame doctor -c /etc/sesame/sesame.toml
  sesame doctor -c /etc/sesame/sesame.toml --send-test-mail you@example.com")]
    Doctor {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also send a test mail to this address through [mail].
        #[arg(long, value_name = "ADDRESS")]
        send_test_mail: Option<String>,
        /// Exit non-zero on warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// Apply the store's migrations (also done at every start), e.g. before a rollout.
    #[command(after_help = "\
Reads the config file's [store] and migrates that database.

Example:
  sesame migrate -c /etc/sesame/sesame.toml")]
    Migrate {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Manage who may sign in.
    #[command(after_help = "\
Reads the config file's [store]; running gateways see a change at once on
PostgreSQL, within a minute on SQLite.

Examples:
  sesame user add alice@example.com --name Alice --group admins -c /etc/sesame/sesame.toml
  sesame user list -c /etc/sesame/sesame.toml
  sesame user disable alice@example.com -c /etc/sesame/sesame.toml")]
    User {
        #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[command(subcommand)]
        action: UserAction,
    },
    /// List and revoke passkeys.
    #[command(after_help = "\
Reads the config file's [store].

Examples:
  sesame passkey list --user alice@example.com -c /etc/sesame/sesame.toml
  sesame passkey revoke --id Q2x1ZS1rZXk -c /etc/sesame/sesame.toml")]
    Passkey {
        #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[command(subcommand)]
        action: PasskeyAction,
    },
    /// List and rotate the signing keys.
    #[command(after_help = "\
Reads the config file's [store] (the keys live there) and [keys] grace.

Examples:
  sesame keys list -c /etc/sesame/sesame.toml
  sesame keys rotate -c /etc/sesame/sesame.toml")]
    Keys {
        #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// List and revoke sessions.
    #[command(after_help = "\
Reads the config file's [store]; running gateways refuse a revoked session at
once on PostgreSQL, within a minute on SQLite.

Examples:
  sesame session list --user alice@example.com -c /etc/sesame/sesame.toml
  sesame session revoke --user alice@example.com -c /etc/sesame/sesame.toml")]
    Session {
        #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[command(subcommand)]
        action: SessionAction,
    },
    /// OpenID Connect: client secrets, and the grants clients hold.
    #[command(after_help = "\
hash-secret reads no config file and no store; grants reads the [store].

Examples:
  sesame oidc grants list --user alice@example.com -c /etc/sesame/sesame.toml
  sesame oidc grants revoke --user alice@example.com -c /etc/sesame/sesame.toml
  sesame oidc hash-secret                  # a new secret, and its hash
  printf %s \"$SECRET\" | sesame oidc hash-secret   # the hash of your own")]
    Oidc {
        #[command(subcommand)]
        action: OidcAction,
    },
}

#[derive(Subcommand)]
enum OidcAction {
    /// Print the argon2id hash of a client secret, for `[[oidc.client]] secret`.
    /// With a secret on standard input, hashes it; else makes a new one and
    /// prints it too (give it to the application, keep only the hash here).
    HashSecret,
    /// List and revoke what OpenID Connect clients were granted.
    Grants {
        #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[command(subcommand)]
        action: GrantsAction,
    },
}

#[derive(Subcommand)]
enum GrantsAction {
    /// Live grants: id, client, user, scope, times.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke grants (their tokens stop working): one by id, or all of a user.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["user", "id"])))]
    Revoke {
        #[arg(long)]
        user: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        id: Option<String>,
    },
}

const DEFAULT_CONFIG: &str = "/etc/sesame/sesame.toml";

#[derive(Subcommand)]
enum UserAction {
    /// Add a user who may sign in.
    Add {
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List users.
    List,
    /// Remove a user and end their sessions.
    Remove { email: String },
    /// Stop a user from signing in and end their sessions.
    Disable { email: String },
    /// Let a disabled user sign in again.
    Enable { email: String },
    /// Replace a user's groups (none given: no groups).
    SetGroups {
        email: String,
        #[arg(long = "group")]
        groups: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PasskeyAction {
    /// List passkeys (id, owner, name, kind, times).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Delete a passkey: it can no longer sign in.
    Revoke {
        /// As `passkey list` shows it (base64url: it may start with `-`).
        #[arg(long, allow_hyphen_values = true)]
        id: String,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Show every key: signing, verifying (until when) or retired.
    List,
    /// Add new keys that sign from now on; the old ones verify for `[keys] grace`.
    Rotate,
    /// Delete every key but the newest of each purpose, at once (after a
    /// leak: rotate, then retire). Sessions and links made before the last
    /// rotation stop working.
    Retire,
}

#[derive(Subcommand)]
enum SessionAction {
    /// List live sessions.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke sessions: all of one user, or one by id.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["user", "id"])))]
    Revoke {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        id: Option<String>,
    },
}

const DEMO_CONFIG: &str = include_str!("../conf/demo.toml");
const DEMO_APP: &str = "127.0.0.1:8081";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // Sesame logs upstream health changes itself, in one line.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,pingora=warn,pingora_load_balancing=error")
        });
    let json = std::env::var("SESAME_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colours only for a person at a terminal: a file or the journal gets
    // plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| format!("{} is not valid:\n{e}", path.display()))
}

/// The config file's text (read once) and the config it gives.
fn read_config(path: &Path) -> Result<(String, Config), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read config file: {e}", path.display()))?;
    let config =
        Config::from_toml(&text).map_err(|e| format!("{} is not valid:\n{e}", path.display()))?;
    Ok((text, config))
}

/// `sesame check-config`: the file is valid; and, if a running Sesame wrote
/// down the config it runs, which keys a reload would change.
fn check_config(path: &Path) -> Result<(), String> {
    let (text, config) = read_config(path)?;
    println!("{}: ok ({} site(s))", path.display(), config.sites.len());
    let socket = &config.upgrade_socket;
    let default = Path::new(sesame::config::DEFAULT_UPGRADE_SOCKET);
    let found = match sesame::running_config::running(socket)? {
        Some(r) => Some((r, false)),
        // Running with the default socket, which this file changes?
        None if socket != default => sesame::running_config::running(default)?.map(|r| (r, true)),
        None => None,
    };
    let Some(((pid, running), moved)) = found else {
        println!(
            "no config running found at {} (no Sesame runs with this upgrade_socket, or it could not write it down): nothing to compare with",
            sesame::running_config::path(socket).display()
        );
        return Ok(());
    };
    let changes = sesame::config::diff::changed_keys(&running, &text)?;
    if changes.is_empty() {
        println!("the same as the config process {pid} runs");
        return Ok(());
    }
    let restart = if moved {
        "; server.upgrade_socket needs a restart (a reload is refused)"
    } else {
        "; a reload applies them"
    };
    println!(
        "against the config process {pid} runs, {} key{} differ{}{restart}:",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" },
        if changes.len() == 1 { "s" } else { "" },
    );
    for (key, change) in changes {
        println!("  {key} ({})", change.label());
    }
    Ok(())
}

fn main() -> ExitCode {
    sesame::disable_huge_pages();
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run {
            config,
            upgrade_from,
        } => read_config(&config).and_then(|(text, c)| {
            let opts = sesame::Options {
                successor: Some(sesame::handover::Successor::of_this_process(&config)),
                upgrade_from,
                config_text: Some(text),
                ..Default::default()
            };
            sesame::run(c, opts).map_err(|e| e.to_string())
        }),
        Command::Demo => demo(),
        Command::CheckConfig { config } => check_config(&config),
        Command::Doctor {
            config,
            send_test_mail,
            strict,
        } => return doctor(&config, send_test_mail, strict),
        Command::Migrate { config } => load(&config).and_then(|c| admin(c, Admin::Migrate)),
        Command::User { config, action } => {
            load(&config).and_then(|c| admin(c, Admin::User(action)))
        }
        Command::Passkey { config, action } => {
            load(&config).and_then(|c| admin(c, Admin::Passkey(action)))
        }
        Command::Keys { config, action } => {
            load(&config).and_then(|c| admin(c, Admin::Keys(action)))
        }
        Command::Session { config, action } => {
            load(&config).and_then(|c| admin(c, Admin::Session(action)))
        }
        Command::Oidc {
            action: OidcAction::HashSecret,
        } => hash_secret(),
        Command::Oidc {
            action: OidcAction::Grants { config, action },
        } => load(&config).and_then(|c| admin(c, Admin::Grants(action))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `sesame doctor`: the checklist on standard output; exit 1 on a failed
/// line, 2 on a warning with `--strict`.
fn doctor(config: &Path, test_mail: Option<String>, strict: bool) -> ExitCode {
    use sesame::doctor::{examine, Level, Options};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = Options { test_mail };
    let report = rt.block_on(examine(config, &opts, &sesame::clock::Clock::system()));
    print!("{}", report.render());
    match report.worst() {
        Level::Fail => ExitCode::from(1),
        Level::Warn if strict => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    }
}

/// `sesame oidc hash-secret`
fn hash_secret() -> Result<(), String> {
    use std::io::{IsTerminal, Read};
    let mut given = String::new();
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        stdin
            .lock()
            .read_to_string(&mut given)
            .map_err(|e| format!("reading the secret from standard input: {e}"))?;
    }
    // A trailing newline (`echo`) is not part of the secret.
    let given = given.trim_end_matches(['\r', '\n']);
    let (secret, made) = match given {
        "" => (sesame::oidc::secret::generate(), true),
        s if s.len() < 16 => {
            return Err("the secret on standard input is shorter than 16 characters".into())
        }
        s => (s.to_string(), false),
    };
    let hash = sesame::oidc::secret::hash(&secret)?;
    if made {
        println!("secret (give it to the application): {secret}");
        println!("hash (for [[oidc.client]] secret):   {hash}");
    } else {
        println!("{hash}");
    }
    Ok(())
}

fn serve(config: Config, demo_app: Option<SocketAddr>) -> Result<(), String> {
    let opts = sesame::Options {
        demo_app,
        ..Default::default()
    };
    sesame::run(config, opts).map_err(|e| e.to_string())
}

fn demo() -> Result<(), String> {
    let config = Config::from_toml(DEMO_CONFIG).map_err(|e| format!("demo config: {e}"))?;
    let url = config.sites[0].public_url.clone();
    println!("Sesame demo: open {url} and sign in with any email address.");
    println!("The sign-in email is printed here (console mail transport). Ctrl-C stops.");
    let demo_app: SocketAddr = DEMO_APP.parse().map_err(|e| format!("{e}"))?;
    serve(config, Some(demo_app))
}

enum Admin {
    Migrate,
    User(UserAction),
    Session(SessionAction),
    Keys(KeysAction),
    Passkey(PasskeyAction),
    Grants(GrantsAction),
}

fn admin(config: Config, command: Admin) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let store = store::open(&config.store)
            .await
            .map_err(|e| e.to_string())?;
        let lines = match command {
            Admin::Migrate => Ok(vec![format!("store is migrated ({:?})", config.store)]),
            Admin::User(UserAction::Add {
                email,
                name,
                groups,
            }) => cli::user_add(&store, &email, name, groups).await,
            Admin::User(UserAction::List) => cli::user_list(&store).await,
            Admin::User(UserAction::Remove { email }) => cli::user_remove(&store, &email).await,
            Admin::User(UserAction::Disable { email }) => {
                cli::user_set_disabled(&store, &email, true).await
            }
            Admin::User(UserAction::Enable { email }) => {
                cli::user_set_disabled(&store, &email, false).await
            }
            Admin::User(UserAction::SetGroups { email, groups }) => {
                cli::user_set_groups(&store, &email, groups).await
            }
            Admin::Session(SessionAction::List { user }) => {
                cli::session_list(&store, user.as_deref()).await
            }
            Admin::Session(SessionAction::Revoke { user: Some(u), .. }) => {
                cli::session_revoke_user(&store, &u).await
            }
            Admin::Session(SessionAction::Revoke { id: Some(id), .. }) => {
                cli::session_revoke_id(&store, &id).await
            }
            Admin::Passkey(PasskeyAction::List { user }) => {
                cli::passkey_list(&store, user.as_deref()).await
            }
            Admin::Passkey(PasskeyAction::Revoke { id }) => cli::passkey_revoke(&store, &id).await,
            Admin::Keys(KeysAction::List) => cli::keys_list(&store, config.key_grace).await,
            Admin::Keys(KeysAction::Rotate) => cli::keys_rotate(&store).await,
            Admin::Keys(KeysAction::Retire) => cli::keys_retire(&store).await,
            Admin::Grants(GrantsAction::List { user }) => {
                cli::oidc_grants_list(&store, user.as_deref()).await
            }
            Admin::Grants(GrantsAction::Revoke { user, id }) => {
                cli::oidc_grants_revoke(&store, id.as_deref(), user.as_deref()).await
            }
            Admin::Session(SessionAction::Revoke { .. }) => {
                Err(cli::AdminError("give --user or --id".into()))
            }
        };
        for line in lines.map_err(|e| e.to_string())? {
            println!("{line}");
        }
        Ok(())
    })
}
