//! The command line: `serve` (the default) and `config check`.

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::backend::builtin::BuiltinBackend;
use crate::backend::gateway::{GatewayBackend, UpstreamTarget, UserTokens};
use crate::config::{
    Config, ConfigArgs, DEFAULT_TOKEN_NAME, NamedToken, Secret, Transport, Upstream,
};
mod admin;

use crate::{http, telemetry, transport};

#[derive(Parser)]
#[command(
    name = "mcpgate",
    version,
    about = "MCP server runtime and gateway with OAuth 2.1-protected HTTP transports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the built-in authorization server's users.
    #[command(subcommand)]
    Users(admin::UsersCommand),
    /// Manage registered OAuth clients.
    #[command(subcommand)]
    Clients(admin::ClientsCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Revoke grants.
    #[command(subcommand)]
    Tokens(admin::TokensCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Generate a random static token for this run and print it once (quick start).
    #[arg(long)]
    generate_token: bool,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration with secrets redacted, or every error, one per line.
    Check(ConfigArgs),
}

/// Runs the command line; the process exit code is the return value.
pub fn main() -> std::process::ExitCode {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `mcpgate --port 9000` means `mcpgate serve --port 9000`.
    let first = argv.get(1).and_then(|a| a.to_str()).map(str::to_owned);
    let explicit = matches!(
        first.as_deref(),
        Some(
            "serve"
                | "config"
                | "users"
                | "clients"
                | "keys"
                | "tokens"
                | "help"
                | "-h"
                | "--help"
                | "-V"
                | "--version"
        )
    );
    if !explicit {
        argv.insert(1, "serve".into());
    }
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && is_value_error(e.kind()) => {
            // A bad flag or env value is a configuration error: one line, like the others.
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default();
            eprintln!("config error: {}", first.trim_start_matches("error: "));
            return std::process::ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Config(ConfigCommand::Check(args)) => config_check(&args),
        Command::Users(command) => run_admin(admin::users(command)),
        Command::Clients(command) => run_admin(admin::clients(command)),
        Command::Keys(command) => run_admin(admin::keys(command)),
        Command::Tokens(command) => run_admin(admin::tokens(command)),
        Command::Serve(args) => {
            let config = match Config::load(&args.config) {
                Ok(config) => config,
                Err(errors) => return report_errors(&errors),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config, args.generate_token)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_admin(
    task: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let outcome = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(task));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn is_value_error(kind: clap::error::ErrorKind) -> bool {
    use clap::error::ErrorKind::*;
    matches!(kind, InvalidValue | ValueValidation | InvalidUtf8)
}

fn config_check(args: &ConfigArgs) -> std::process::ExitCode {
    match Config::load(args) {
        Ok(config) => {
            print!("{}", config.render_redacted());
            std::process::ExitCode::SUCCESS
        }
        Err(errors) => report_errors(&errors),
    }
}

fn report_errors(errors: &[crate::config::ConfigError]) -> std::process::ExitCode {
    for error in errors {
        eprintln!("config error: {error}");
    }
    std::process::ExitCode::from(2)
}

async fn serve(mut config: Config, generate_token: bool) -> anyhow::Result<()> {
    telemetry::init(&config.log_level, config.log_format);
    let generated = if generate_token && !config.tokens.iter().any(|t| t.name == DEFAULT_TOKEN_NAME)
    {
        let secret = random_token();
        config.tokens.insert(
            0,
            NamedToken {
                name: DEFAULT_TOKEN_NAME.into(),
                secret: Secret::new(secret.clone()),
                scopes: crate::config::full_access(),
            },
        );
        Some(secret)
    } else {
        None
    };
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    if config.metrics_enabled && config.transport != Transport::Stdio {
        // The recorder calibrates its clock by busy-waiting (up to 200 ms on a noisy machine):
        // done beside the stores' start-up instead of after it. `http::build` waits for it.
        std::thread::spawn(crate::ops::metrics::install);
    }
    // Started before the backend: a gateway that passes users' upstream tokens needs its store.
    let builtin = match &config.oauth {
        Some(oauth) if oauth.builtin.is_some() && config.transport != Transport::Stdio => {
            Some(http::auth_server::start(oauth, shutdown.clone()).await?)
        }
        _ => None,
    };
    if config.transport == Transport::Stdio {
        let backend = backend(&config, builtin.as_ref(), shutdown.clone()).await?;
        let served = transport::stdio::serve(&config, backend.clone(), shutdown.clone()).await;
        shutdown.cancel();
        backend.close().await;
        return served;
    }
    if !config.auth_required() {
        tracing::warn!(
            "no MCP_AUTH_TOKEN or [[tokens]] configured: the HTTP endpoints accept anyone"
        );
    }
    let listener = tokio::net::TcpListener::bind((config.host, config.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
    let addr = listener.local_addr()?;
    // Independent waits (the backend's store or upstream, the IdP's discovery and JWKS): side by
    // side, so start-up takes the longest of them rather than their sum.
    let (backend, authenticator) = tokio::try_join!(
        backend(&config, builtin.as_ref(), shutdown.clone()),
        async {
            http::auth::authenticator(&config, builtin.as_ref())
                .await
                .map_err(anyhow::Error::from)
        },
    )?;
    let wiring = http::AuthWiring {
        authenticator,
        server: builtin.as_ref().map(|b| b.server.clone()),
        revocations: builtin.as_ref().map(|b| b.revocations.clone()),
        session_store: crate::session_store::shared_store(
            &config,
            builtin.as_ref().map(|b| &b.store),
        ),
    };
    let app = http::build(&config, backend.clone(), wiring, shutdown.clone());
    if let Some(password) = builtin
        .as_ref()
        .and_then(|b| b.first_admin_password.as_deref())
    {
        // Shown once, on stdout, never logged.
        println!("First start: created user `admin` with password {password}");
        println!("  change it with: mcpgate users passwd admin --password-stdin");
    }
    print_banner(&config, addr, generated.as_deref());
    tracing::info!(%addr, transport = ?config.transport, "listening");
    http::serve(listener, app.router, shutdown, config.shutdown_grace).await?;
    backend.close().await;
    tracing::info!("shut down");
    Ok(())
}

async fn backend(
    config: &Config,
    builtin: Option<&http::auth_server::Builtin>,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<dyn Backend>> {
    let pass_token = config
        .oauth
        .as_ref()
        .and_then(|oauth| oauth.builtin.as_ref())
        .and_then(|settings| settings.proxy.as_ref())
        .is_some_and(|proxy| proxy.pass_token_to_gateway);
    if pass_token {
        // Config validation allows the option only with an HTTP upstream and transport.
        let (Some(Upstream::Url(url)), Some(builtin), Some(oauth)) =
            (&config.upstream, builtin, &config.oauth)
        else {
            anyhow::bail!("pass_token_to_gateway needs an HTTP upstream and an HTTP transport");
        };
        let Some(federation) = builtin.server.upstream.clone() else {
            anyhow::bail!("pass_token_to_gateway needs proxy mode's upstream IdP");
        };
        let tokens = UserTokens {
            federation,
            store: builtin.store.clone(),
            issuer: oauth.issuer.clone(),
        };
        return Ok(GatewayBackend::connect_per_user(
            url.clone(),
            tokens,
            config.tool_timeout,
            shutdown,
        )?);
    }
    Ok(match &config.upstream {
        None => Arc::new(
            BuiltinBackend::open(&config.notes_db)
                .await
                .with_context(|| {
                    format!("cannot open the notes store {}", config.notes_db.display())
                })?,
        ),
        Some(upstream) => {
            let target = match upstream {
                Upstream::Command(cmd) => UpstreamTarget::Command(cmd.clone()),
                Upstream::Url(url) => UpstreamTarget::Url(url.clone()),
            };
            GatewayBackend::connect(target, config.tool_timeout, shutdown)
                .await
                .context("cannot start the upstream MCP server")?
        }
    })
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut sig) => {
                    sig.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate => {}
        }
        tracing::info!("shutdown requested");
        shutdown.cancel();
    });
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How to connect, on stdout, once. The generated token (if any) appears here and nowhere else.
fn print_banner(config: &Config, addr: std::net::SocketAddr, generated: Option<&str>) {
    let base = format!("http://{addr}");
    let mut out = format!(
        "mcpgate {} listening on {base}\n",
        env!("CARGO_PKG_VERSION")
    );
    if config.transport == Transport::StreamableHttp {
        out.push_str(&format!("  Streamable HTTP  {base}/mcp\n"));
    }
    if config.transport == Transport::Sse || config.legacy_sse {
        out.push_str(&format!("  Legacy SSE       {base}/sse\n"));
    }
    let url = if config.transport == Transport::Sse {
        format!("{base}/sse")
    } else {
        format!("{base}/mcp")
    };
    let mut header = String::new();
    if !config.tokens.is_empty() {
        let names: Vec<&str> = config.tokens.iter().map(|t| t.name.as_str()).collect();
        out.push_str(&format!(
            "  Auth             static bearer tokens ({})\n",
            names.join(", ")
        ));
        let token = generated.unwrap_or("$MCP_AUTH_TOKEN");
        if generated.is_some() {
            out.push_str(&format!(
                "  Token            {token}   (generated for this run; shown once)\n"
            ));
        }
        header = format!(" --header \"Authorization: Bearer {token}\"");
    }
    if let Some(oauth) = &config.oauth {
        out.push_str(&format!(
            "  OAuth            tokens from {} for {}\n",
            oauth.issuer,
            oauth.mcp_resource()
        ));
    }
    if !config.auth_required() {
        out.push_str("  Auth             none (set MCP_AUTH_TOKEN to require a bearer token)\n");
    }
    out.push_str("Connect:\n");
    out.push_str(&format!("  npx @modelcontextprotocol/inspector --cli {url} --transport http --method tools/list{header}\n"));
    out.push_str(&format!(
        "  claude mcp add --transport http mcpgate {url}{header}\n"
    ));
    print!("{out}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
}
