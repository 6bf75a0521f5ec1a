//! `warden`: the daemon and its command-line tools.

mod audit;
mod cli;
mod commands;
mod config;
mod control;
mod daemon;
mod ebpf;
mod identity;
mod proxy;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
