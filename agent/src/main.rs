//! `warden`: the daemon and its command-line tools.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = warden::cli::Cli::parse();
    match warden::commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
