//! The `ringserve` binary: parse flags, start the server, print one line, serve until SIGINT or
//! SIGTERM, drain, exit 0. Any start-up error is one line on stderr and exit code 2.

use std::process::ExitCode;

use clap::Parser;
use ringserve::{Cli, Config, Error, Server};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad usage");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("ringserve: {first} (see --help)");
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringserve: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let config = Config::from_cli(cli)?;
    // Block SIGINT/SIGTERM before any thread starts, so workers inherit the mask and only
    // the `sigwait` below receives them.
    let signals = block_signals()?;
    let server = Server::start(&config)?;
    println!("{}", server.banner());
    let stopper = server.stopper();
    let mut signal = 0;
    // SAFETY: `signals` is an initialized sigset; `signal` is a live out-parameter.
    unsafe { libc::sigwait(&signals, &mut signal) };
    stopper.stop();
    server.join()?;
    Ok(())
}

fn block_signals() -> Result<libc::sigset_t, Error> {
    // SAFETY: sigemptyset/sigaddset initialize the local set; pthread_sigmask reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(Error::Os {
                what: "block signals",
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        Ok(set)
    }
}
