//! The `loadgen` binary: parse flags, run, print the report. Two subcommands work on JSON
//! reports: `loadgen merge A.json B.json` combines runs made at the same time on several
//! machines, `loadgen plot A.json [B.json ...] -o FILE.svg` draws them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use loadgen::config::{Cli, Config};
use loadgen::plot::{self, YScale};
use loadgen::{hgrm, output, Report};

/// `loadgen plot`: flags.
#[derive(Parser, Debug)]
#[command(name = "loadgen plot", about = "Draw loadgen JSON reports as one SVG")]
struct PlotCli {
    /// JSON reports (`loadgen --json` output), one line each.
    #[arg(required = true, value_name = "REPORT.json")]
    files: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE.svg")]
    output: PathBuf,
    /// Latency axis scale.
    #[arg(long, value_enum, default_value_t = YScale::Auto)]
    y_scale: YScale,
    /// Title above the picture.
    #[arg(long, default_value = "loadgen")]
    title: String,
}

/// `loadgen merge`: flags.
#[derive(Parser, Debug)]
#[command(name = "loadgen merge", about = "Combine JSON reports of runs made at the same time")]
struct MergeCli {
    /// JSON reports (`loadgen --json` output).
    #[arg(required = true, value_name = "REPORT.json")]
    files: Vec<PathBuf>,
    /// Print the merged report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the merged report as JSON to this file (what `plot` and `merge` read).
    #[arg(short = 'o', long = "output", value_name = "OUT.json")]
    output: Option<PathBuf>,
    /// Write the merged histograms as .hgrm files (as for a run).
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("merge") => return parse(&args[1..]).map_or_else(|code| code, merge),
        Some("plot") => return parse(&args[1..]).map_or_else(|code| code, plot),
        _ => {}
    }
    let cli = match parse::<Cli>(&args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let config = match Config::from_cli(&cli) {
        Ok(config) => config,
        Err(e) => return usage_error(&e),
    };
    if let Some(file) = &cli.hgrm {
        // Refuse an unwritable path now, not after a run whose result would be lost.
        for kind in hgrm::kinds(config.rate.is_some()) {
            if let Err(e) = output::check_writable(&hgrm::path_for(file, kind)) {
                return usage_error(&format!("--hgrm: {e}"));
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

/// Parses flags; a bad command line is one line on stderr and exit code 2; `--help` and
/// `--version` print and exit 0.
fn parse<T: Parser>(args: &[String]) -> Result<T, ExitCode> {
    match T::try_parse_from(args) {
        Ok(cli) => Ok(cli),
        Err(e) if e.use_stderr() => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad usage");
            Err(usage_error(&format!(
                "{} (see --help)",
                first.strip_prefix("error: ").unwrap_or(first)
            )))
        }
        Err(e) => {
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
    }
}

/// One line on stderr, exit code 2.
fn usage_error(message: &str) -> ExitCode {
    eprintln!("loadgen: {message}");
    ExitCode::from(2)
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
fn write_hgrm(report: &Report, file: &Path) -> Result<(), ExitCode> {
    for (path, text) in hgrm::files(report, file) {
        if let Err(e) = output::write_atomic(&path, text.as_bytes()) {
            return Err(usage_error(&format!("--hgrm: {e}")));
        }
    }
    Ok(())
}

/// Reads JSON reports of this loadgen's schema.
fn read_reports(files: &[PathBuf]) -> Result<Vec<Report>, String> {
    files
        .iter()
        .map(|file| {
            let name = file.display().to_string();
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("cannot read {name}: {e}"))?;
            Report::from_json(&text, &name)
        })
        .collect()
}

fn merge(cli: MergeCli) -> ExitCode {
    let reports = match read_reports(&cli.files) {
        Ok(reports) => reports,
        Err(e) => return usage_error(&e),
    };
    let rate_mode = reports.iter().any(|r| r.service_time.is_some());
    let hgrm_paths =
        cli.hgrm.iter().flat_map(|f| hgrm::kinds(rate_mode).iter().map(|k| hgrm::path_for(f, k)));
    for path in cli.output.iter().cloned().chain(hgrm_paths) {
        if let Err(e) = output::check_writable(&path) {
            return usage_error(&e);
        }
    }
    let report = match Report::merge(&reports) {
        Ok(report) => report,
        Err(e) => return usage_error(&e),
    };
    if let Some(path) = &cli.output {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| format!("cannot encode the merged report: {e}"))
            .and_then(|text| output::write_atomic(path, format!("{text}\n").as_bytes()));
        if let Err(e) = written {
            return usage_error(&e);
        }
    }
    if let Some(file) = &cli.hgrm {
        if let Err(code) = write_hgrm(&report, file) {
            return code;
        }
    }
    print(&report, cli.json, false);
    ExitCode::SUCCESS
}

fn plot(cli: PlotCli) -> ExitCode {
    let reports = match read_reports(&cli.files) {
        Ok(reports) => reports,
        Err(e) => return usage_error(&e),
    };
    if let Err(e) = output::check_writable(&cli.output) {
        return usage_error(&e);
    }
    let runs: Vec<plot::Run> = cli
        .files
        .iter()
        .zip(&reports)
        .map(|(file, report)| plot::Run {
            label: report.label.clone().unwrap_or_else(|| {
                file.file_stem().map_or_else(
                    || file.display().to_string(),
                    |s| s.to_string_lossy().into_owned(),
                )
            }),
            report,
        })
        .collect();
    let svg = plot::render(&runs, cli.y_scale, &cli.title);
    match output::write_atomic(&cli.output, svg.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => usage_error(&e),
    }
}
