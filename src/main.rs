//! The `ringserve` binary: parse flags (under a `--config` file's), start the server, print one line, serve until SIGINT or
//! SIGTERM (SIGUSR1 reopens the access log), drain, exit 0. Any start-up error is one line on
//! stderr, with a timestamp, and exit code 2.

use std::process::ExitCode;

use ringserve::config_file::{self, ArgsError};
use ringserve::observe::access_log::now_secs;
use ringserve::{Cli, Config, Error, Server};

fn main() -> ExitCode {
    let (cli, sources) = match config_file::parse_args(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(ArgsError::File(message)) => {
            eprintln!("ringserve: {message}");
            return ExitCode::from(2);
        }
        Err(ArgsError::Clap(e)) if e.use_stderr() => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad usage");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("ringserve: {first} (see --help)");
            return ExitCode::from(2);
        }
        Err(ArgsError::Clap(e)) => {
            let _ = e.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let stamp = ringserve::observe::errlog::timestamp(now_secs());
            // An error about a value the config file gave names the file and line.
            match e.option().and_then(|option| sources.locate(option)) {
                Some(place) => eprintln!("{stamp} ringserve: {place}: {e}"),
                None => eprintln!("{stamp} ringserve: {e}"),
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let config = Config::from_cli(cli)?;
    // Block SIGINT/SIGTERM/SIGUSR1 before any thread starts, so workers inherit the mask and only
    // the `sigwait` below receives them.
    let signals = block_signals()?;
    let server = Server::start(&config)?;
    println!("{}", server.banner());
    let stopper = server.stopper();
    loop {
        let mut signal = 0;
        // SAFETY: `signals` is an initialized sigset; `signal` is a live out-parameter.
        unsafe { libc::sigwait(&signals, &mut signal) };
        if signal != libc::SIGUSR1 {
            break;
        }
        server.reopen_log();
    }
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
        libc::sigaddset(&mut set, libc::SIGUSR1);
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
