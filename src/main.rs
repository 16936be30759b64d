//! The `lockstep` command.

use anyhow::Context;
use clap::FromArgMatches;
use lockstep::config::{Cli, Command, ConfigCommand, show};
use lockstep::server::Server;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::from_arg_matches(&show::command().get_matches()).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Serve(args) => {
            let cfg = args.resolve()?;
            init_logging(cfg.log_json);
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
                let server = Server::bind(cfg.clone()).await.context("starting the server")?;
                tracing::info!(
                    http = %server.http_addr(),
                    quic = %server.quic_addr(),
                    certificate_sha256 = %server.certs().current_sha256(),
                    https = cfg.http_tls,
                    admin = %server.admin_addr().map_or_else(|| "none".to_owned(), |a| a.to_string()),
                    "lockstep listening"
                );
                server.run(shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::Token(args) => {
            let mut cfg = args.serve.resolve()?;
            cfg.dev = false;
            let auth = cfg.authenticator().context("loading the token secret")?;
            let mut claims = auth.claims_for(&args.sub, args.plan.into(), args.ttl);
            claims.max_devices = args.max_devices;
            claims.host_of = args.host_of;
            let token = auth
                .mint(&claims)
                .context("minting needs an HS256 secret (LOCKSTEP_JWT_SECRET or --jwt-secret-file)")?;
            println!("{token}");
            Ok(())
        }
        Command::Config(ConfigCommand::Check(args)) => {
            let cfg = args.resolve().context("invalid configuration")?;
            cfg.validate().context("invalid configuration")?;
            print!("{}", show::effective_toml(&cfg));
            eprintln!("configuration OK");
            Ok(())
        }
        Command::Config(ConfigCommand::Example) => {
            print!("{}", show::example());
            Ok(())
        }
        Command::Cert(args) => {
            let pair = lockstep::cert::write_dev_pair(&args.out, &args.san)
                .with_context(|| format!("writing a certificate into {}", args.out.display()))?;
            eprintln!(
                "wrote {} and {} (self-signed, valid 13 days, not after {} Unix seconds)",
                pair.cert.display(),
                pair.key.display(),
                pair.not_after
            );
            eprintln!("serve it with: lockstep serve --cert {} --key {}", pair.cert.display(), pair.key.display());
            eprintln!("sha-256:");
            println!("{}", pair.sha256);
            Ok(())
        }
    }
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,quinn=warn,wtransport=warn,h2=warn,hyper=warn"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    if json { fmt.json().init() } else { fmt.init() }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
