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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match args.command {
            Command::Backend(a) => cli::run_backend(a).await,
            Command::Train(a) => cli::run_train(a).await,
            Command::Eval(a) => cli::run_eval(a).await,
            Command::Compress(a) => cli::run_compress(a),
            Command::Bench(a) => cli::run_bench(a),
        }
    })?;
    Ok(())
}
