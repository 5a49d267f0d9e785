//! The `loadgen` binary: parse flags, run, print the report. `loadgen merge A.json B.json`
//! combines JSON reports of runs made at the same time on several machines.

use std::process::ExitCode;

use clap::Parser;
use loadgen::config::{Cli, Config};
use loadgen::Report;
use loadgen::{hgrm, output};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("merge") {
        return merge(&args[2..]);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad usage");
            eprintln!("loadgen: {} (see --help)", first.strip_prefix("error: ").unwrap_or(first));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let config = match Config::from_cli(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(file) = &cli.hgrm {
        // Refuse an unwritable path now, not after a run whose result would be lost.
        for kind in hgrm::kinds(config.rate.is_some()) {
            if let Err(e) = output::check_writable(&hgrm::path_for(file, kind)) {
                eprintln!("loadgen: --hgrm: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match loadgen::run(&config) {
        Ok(report) => {
            print(&report, cli.json, cli.latency);
            if let Some(file) = &cli.hgrm {
                if let Err(code) = write_hgrm(&report, file) {
                    return code;
                }
            }
            match report.failure() {
                Some(why) => {
                    eprintln!("loadgen: {why}");
                    ExitCode::from(1)
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

fn print(report: &Report, json: bool, spectrum: bool) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("loadgen: cannot encode the report: {e}"),
        }
    } else {
        print!("{}", report.to_text(spectrum));
    }
}

/// Writes the report's `.hgrm` files, each atomically.
fn write_hgrm(report: &Report, file: &std::path::Path) -> Result<(), ExitCode> {
    for (path, text) in hgrm::files(report, file) {
        if let Err(e) = output::write_atomic(&path, text.as_bytes()) {
            eprintln!("loadgen: --hgrm: {e}");
            return Err(ExitCode::from(2));
        }
    }
    Ok(())
}

fn merge(files: &[String]) -> ExitCode {
    let json = files.iter().any(|f| f == "--json");
    let mut reports = Vec::new();
    for file in files.iter().filter(|f| *f != "--json") {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("loadgen: cannot read {file}: {e}");
                return ExitCode::from(2);
            }
        };
        match serde_json::from_str::<Report>(&text) {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("loadgen: {file} is not a loadgen JSON report: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if reports.is_empty() {
        eprintln!("loadgen: usage: loadgen merge A.json B.json ... [--json]");
        return ExitCode::from(2);
    }
    match Report::merge(&reports) {
        Ok(report) => {
            print(&report, json, false);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
