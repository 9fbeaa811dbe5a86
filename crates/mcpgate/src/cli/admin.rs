//! Administration of the built-in authorization server: `users`, `clients`, `keys`, `tokens`.
//! Each command opens the same store `serve` uses (from the same configuration).

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use mcpgate_auth::keys::KeyManager;
use mcpgate_auth::resource::claims::now_secs;
use mcpgate_auth::server::{secrets, users};
use mcpgate_auth::store::{Client, ClientSource, Store, User};

use crate::config::{Config, ConfigArgs};
use crate::http::auth_server;

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from standard input.
    Add {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List users.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Delete a user with their consents, sessions and grants.
    Remove {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Change a user's password (read from standard input).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum ClientsCommand {
    /// Pre-register a client. With --confidential a secret is generated and printed once.
    Add {
        client_id: String,
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        confidential: bool,
        /// Allow the client_credentials grant (headless automation).
        #[arg(long)]
        client_credentials: bool,
        #[arg(long)]
        scope: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List registered clients (metadata-document clients are fetched, not registered).
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Delete a client with its consents and grants.
    Remove {
        client_id: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Publish a new signing key now; sign with it after the delay (default: at once).
    Rotate {
        /// e.g. 10m, 1h, 30s, 2d
        #[arg(long, value_parser = parse_duration)]
        activate_after: Option<Duration>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List published keys and which one signs.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// End every grant of a user and/or a client; their tokens stop working within seconds.
    Revoke {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        client: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a duration like 30s, 10m, 1h, 2d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

async fn open(args: &ConfigArgs) -> anyhow::Result<(Config, Arc<dyn Store>)> {
    let config = Config::load(args).map_err(|errors| {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("config error: {e}"))
            .collect();
        anyhow::anyhow!(lines.join("\n"))
    })?;
    let Some(settings) = config.oauth.as_ref().and_then(|o| o.builtin.as_ref()) else {
        bail!(
            "these commands manage the built-in authorization server: set MCP_OAUTH_ENABLED=true (mode builtin)"
        );
    };
    let store = auth_server::open_store(settings).await?;
    Ok((config, store))
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if !from_stdin {
        bail!("pass --password-stdin and write the password to standard input");
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the password")?;
    let password = input.trim_end_matches(['\r', '\n']).to_owned();
    if password.chars().count() < 8 {
        bail!("the password must be at least 8 characters");
    }
    Ok(password)
}

pub async fn users(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add {
            name,
            password_stdin,
            config,
        } => {
            let password = read_password(password_stdin)?;
            let (_, store) = open(&config).await?;
            let hash = users::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
            let user = User {
                id: uuid::Uuid::new_v4().to_string(),
                username: name.clone(),
                password_hash: hash,
                created_at: now_secs(),
            };
            store.create_user(&user).await?;
            println!("created user {name}");
        }
        UsersCommand::List { config } => {
            let (_, store) = open(&config).await?;
            for user in store.list_users().await? {
                println!(
                    "{}\t{}\tcreated {}",
                    user.username, user.id, user.created_at
                );
            }
        }
        UsersCommand::Remove { name, config } => {
            let (_, store) = open(&config).await?;
            if !store.delete_user(&name).await? {
                bail!("no user named {name}");
            }
            println!("removed user {name}");
        }
        UsersCommand::Passwd {
            name,
            password_stdin,
            config,
        } => {
            let password = read_password(password_stdin)?;
            let (_, store) = open(&config).await?;
            let hash = users::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
            if !store.set_password(&name, &hash).await? {
                bail!("no user named {name}");
            }
            println!("changed the password of {name}");
        }
    }
    Ok(())
}

pub async fn clients(command: ClientsCommand) -> anyhow::Result<()> {
    match command {
        ClientsCommand::Add {
            client_id,
            redirect_uris,
            name,
            confidential,
            client_credentials,
            scope,
            config,
        } => {
            if client_id.starts_with("https://") {
                bail!("https client ids are client metadata documents; they need no registration");
            }
            for uri in &redirect_uris {
                mcpgate_auth::server::register::check_redirect_uri(uri)
                    .map_err(|reason| anyhow::anyhow!("redirect URI {uri}: {reason}"))?;
            }
            if client_credentials && !confidential {
                bail!("--client-credentials needs --confidential (a secret)");
            }
            let (_, store) = open(&config).await?;
            let secret = confidential.then(secrets::random_token);
            let mut grant_types = Vec::new();
            if !redirect_uris.is_empty() {
                grant_types.extend(["authorization_code", "refresh_token"]);
            }
            if client_credentials {
                grant_types.push("client_credentials");
            }
            if grant_types.is_empty() {
                bail!(
                    "give --redirect-uri for a login client, or --client-credentials for a headless one"
                );
            }
            let mut metadata = serde_json::json!({
                "client_name": name.unwrap_or_else(|| client_id.clone()),
                "redirect_uris": redirect_uris,
                "grant_types": grant_types,
                "response_types": ["code"],
                "token_endpoint_auth_method": if confidential { "client_secret_basic" } else { "none" },
            });
            if let Some(scope) = scope {
                metadata["scope"] = scope.into();
            }
            let client = Client {
                client_id: client_id.clone(),
                secret_hash: secret.as_deref().map(secrets::hash),
                metadata,
                source: ClientSource::Admin,
                created_at: now_secs(),
            };
            store.create_client(&client).await?;
            println!("registered client {client_id}");
            if let Some(secret) = secret {
                println!("client secret (shown once): {secret}");
            }
        }
        ClientsCommand::List { config } => {
            let (_, store) = open(&config).await?;
            for client in store.list_clients().await? {
                let name = client
                    .metadata
                    .get("client_name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                let source = match client.source {
                    ClientSource::Dynamic => "registered",
                    ClientSource::Admin => "admin",
                };
                println!("{}\t{source}\t{name}", client.client_id);
            }
        }
        ClientsCommand::Remove { client_id, config } => {
            let (_, store) = open(&config).await?;
            if !store.delete_client(&client_id).await? {
                bail!("no client {client_id}");
            }
            println!("removed client {client_id}");
        }
    }
    Ok(())
}

pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate {
            activate_after,
            config,
        } => {
            let (config, store) = open(&config).await?;
            let keys = KeyManager::load_or_create(store).await?;
            let settings = config.oauth.as_ref().and_then(|o| o.builtin.as_ref());
            // The old key stays published while tokens it signed can still be valid.
            let keep = settings.map(|s| s.access_token_ttl + Duration::from_secs(300));
            let kid = keys
                .rotate(activate_after.unwrap_or_default(), keep)
                .await?;
            println!(
                "new signing key {kid} published; signing with it {}",
                match activate_after {
                    Some(d) if !d.is_zero() => format!("in {} s", d.as_secs()),
                    _ => "now (running servers switch within ~5 s)".to_owned(),
                }
            );
        }
        KeysCommand::List { config } => {
            let (_, store) = open(&config).await?;
            let keys = KeyManager::load_or_create(store).await?;
            for (kid, activate_at, retire_at, signing) in keys.describe() {
                let retire = retire_at.map_or_else(|| "-".to_owned(), |r| r.to_string());
                println!(
                    "{kid}\tactive from {activate_at}\tretires {retire}{}",
                    if signing { "\tsigning" } else { "" }
                );
            }
        }
    }
    Ok(())
}

pub async fn tokens(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Revoke {
            user,
            client,
            config,
        } => {
            if user.is_none() && client.is_none() {
                bail!("name --user and/or --client");
            }
            let (_, store) = open(&config).await?;
            let user_id = match &user {
                Some(name) => Some(
                    store
                        .user_by_name(name)
                        .await?
                        .with_context(|| format!("no user named {name}"))?
                        .id,
                ),
                None => None,
            };
            let families = store
                .revoke_grants(user_id.as_deref(), client.as_deref(), now_secs())
                .await?;
            println!(
                "revoked {} grant(s); running servers refuse their tokens within seconds",
                families.len()
            );
        }
    }
    Ok(())
}
