//! The `sesame` command line. Parsing arguments and printing only; all
//! behaviour lives in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sesame::config::Config;
use sesame::email::Email;
use sesame::keys::random_id;
use sesame::store::{self, User};

#[derive(Parser)]
#[command(
    name = "sesame",
    version,
    about = "Passwordless authentication gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in the foreground (SIGTERM: graceful stop).
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Try Sesame on localhost: embedded demo config, console mail, demo app.
    Demo,
    /// Validate a config file; non-zero exit with every problem listed.
    CheckConfig {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Manage who may sign in.
    User {
        #[arg(short, long, global = true, default_value = "/etc/sesame/sesame.toml")]
        config: PathBuf,
        #[command(subcommand)]
        action: UserAction,
    },
}

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
}

const DEMO_CONFIG: &str = include_str!("../conf/demo.toml");
const DEMO_APP: &str = "127.0.0.1:8081";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,pingora=warn"));
    let json = std::env::var("SESAME_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run { config } => load(&config).and_then(|c| serve(c, None)),
        Command::Demo => demo(),
        Command::CheckConfig { config } => load(&config).map(|c| {
            println!("{}: ok ({} site(s))", config.display(), c.sites.len());
        }),
        Command::User { config, action } => load(&config).and_then(|c| user(c, action)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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

fn user(config: Config, action: UserAction) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let store = store::open(&config.store)
            .await
            .map_err(|e| e.to_string())?;
        match action {
            UserAction::Add {
                email,
                name,
                groups,
            } => {
                let email = Email::parse(&email).map_err(|e| format!("{email:?}: {e}"))?;
                if let Some(g) = groups
                    .iter()
                    .find(|g| g.is_empty() || g.contains([',', '\r', '\n']))
                {
                    return Err(format!(
                        "group {g:?}: must be non-empty and hold no comma or line break"
                    ));
                }
                if let Some(n) = &name {
                    if n.chars().any(|c| c.is_control()) {
                        return Err("--name must not hold control characters".into());
                    }
                }
                let user = User {
                    id: format!("u_{}", random_id(12)),
                    email: email.clone(),
                    name,
                    groups,
                    disabled: false,
                    created_at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0),
                };
                match store.add_user(&user).await {
                    Ok(()) => {
                        println!("added {email} ({})", user.id);
                        Ok(())
                    }
                    Err(store::StoreError::Exists) => Err(format!("{email} already exists")),
                    Err(e) => Err(e.to_string()),
                }
            }
            UserAction::List => {
                let users = store.list_users().await.map_err(|e| e.to_string())?;
                for u in users {
                    println!(
                        "{}\t{}\t{}\t{}{}",
                        u.email,
                        u.id,
                        u.name.as_deref().unwrap_or("-"),
                        if u.groups.is_empty() {
                            "-".to_string()
                        } else {
                            u.groups.join(",")
                        },
                        if u.disabled { "\tdisabled" } else { "" }
                    );
                }
                Ok(())
            }
            UserAction::Remove { email } => {
                let email = Email::parse(&email).map_err(|e| format!("{email:?}: {e}"))?;
                match store.remove_user(&email).await.map_err(|e| e.to_string())? {
                    true => {
                        println!("removed {email}; their sessions are revoked");
                        Ok(())
                    }
                    false => Err(format!("no user {email}")),
                }
            }
        }
    })
}
