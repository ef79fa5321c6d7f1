//! The `adacompress` binary: parse the command line, set up logging, run a command.

use clap::Parser;

use adacompress::cli::{self, Cli, Command};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Cli::parse();
    // `serve` logs as its config says (JSON by default); every other command logs text.
    let serve_config = match &args.command {
        Command::Serve(a) => Some(cli::serve_config(a)?),
        _ => None,
    };
    let (format, level) = serve_config.as_ref().map_or(("text", "info"), |c| {
        (c.log.format.as_str(), c.log.level.as_str())
    });
    // The demo's own proxy would log every photo; its table and plot say it better.
    let level = match &args.command {
        Command::Demo(_) => "info,adacompress::proxy=warn",
        _ => level,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(cli::run(args.command, serve_config))?;
    Ok(())
}
