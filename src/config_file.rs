//! `--config FILE`: settings from a TOML file, under the command line.
//!
//! The file holds top-level `key = value` lines named like the long flags (`root`, `addr`,
//! `access-log` or `access_log`, ...). Rather than a second schema to keep in step with the
//! flags, each key is turned into the flag it names and clap parses and validates it, so every
//! flag, including ones added later, works in the file: `true` is the bare switch (`false`
//! leaves it off), an array repeats the flag once per element, a number or string is the value.
//! Each key is first parsed on its own, so a bad one is reported with its line; then the file's
//! flags are placed before the command line's, leaving out every option the command line gives
//! (so a repeatable option given there replaces the file's list rather than adding to it).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, CommandFactory, FromArgMatches};
use toml_edit::{ImDocument, Item, Value};

use crate::config::Cli;

/// Largest config file read: a settings file is a few hundred bytes; this only stops a wrong
/// path (a log, a device) from being read whole.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Why the arguments could not be turned into a `Cli`.
#[derive(Debug)]
pub enum ArgsError {
    /// clap's own outcome: bad usage on the command line, or `--help`/`--version`.
    Clap(clap::Error),
    /// A problem with the config file, as one line (`FILE line N: ...`).
    File(String),
}

/// Where the options the config file set were written, so a start-up error about one of them
/// (a root that does not exist, an address that cannot be bound) can name the line.
#[derive(Debug, Default)]
pub struct Sources {
    file: PathBuf,
    /// (long option name, line) of each setting taken from the file.
    lines: Vec<(String, usize)>,
}

impl Sources {
    /// `FILE line N` for an option the file set, `None` for one it did not.
    pub fn locate(&self, option: &str) -> Option<String> {
        let line = self.lines.iter().find(|(name, _)| name == option)?.1;
        Some(format!("{} line {line}", self.file.display()))
    }
}

/// One setting of the file, as the flags it stands for.
#[derive(Debug, PartialEq)]
struct Setting {
    /// The long option (`access-log`), whatever spelling the file used.
    long: String,
    /// The arguments: `["--access-log", "/var/log/x"]`, nothing for a switch set to false.
    args: Vec<String>,
    line: usize,
}

/// Parses the command line (`args`, program name first), merged under `--config FILE` if it
/// names one.
pub fn parse_args(args: Vec<OsString>) -> Result<(Cli, Sources), ArgsError> {
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(&args).map_err(ArgsError::Clap)?;
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        return Ok((cli_from(&matches)?, Sources::default()));
    };
    let text = read(&path)
        .map_err(|e| ArgsError::File(format!("cannot read config file {}: {e}", path.display())))?;
    let settings = settings(&text, &command)
        .map_err(|e| ArgsError::File(format!("{} {e}", path.display())))?;
    let mut merged: Vec<OsString> = args.iter().take(1).cloned().collect();
    let mut sources = Sources { file: path, lines: Vec::new() };
    for setting in settings {
        let Some(arg) = find_arg(&command, &setting.long) else { continue };
        if matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue; // the command line overrides the file
        }
        sources.lines.push((setting.long, setting.line));
        merged.extend(setting.args.into_iter().map(OsString::from));
    }
    merged.extend(args.into_iter().skip(1));
    let matches = command.try_get_matches_from(merged).map_err(ArgsError::Clap)?;
    Ok((cli_from(&matches)?, sources))
}

fn cli_from(matches: &ArgMatches) -> Result<Cli, ArgsError> {
    Cli::from_arg_matches(matches).map_err(ArgsError::Clap)
}

fn read(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(CONFIG_FILE_BYTES_MAX + 1).read_to_string(&mut text)?;
    if text.len() as u64 > CONFIG_FILE_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "larger than {CONFIG_FILE_BYTES_MAX} bytes; not a settings file"
        )));
    }
    Ok(text)
}

/// The file's settings in file order, each checked by clap on its own; an error is
/// `line N: ...`.
fn settings(text: &str, command: &clap::Command) -> Result<Vec<Setting>, String> {
    let document = ImDocument::parse(text).map_err(|e| {
        // An error at the very end (an unclosed list) is on the last line, not after it.
        let last = text.lines().count().max(1);
        let line = e.span().map_or(1, |span| line_of_char(text, span.start)).min(last);
        let message = e.message().trim().lines().collect::<Vec<_>>().join("; ");
        format!("line {line}: not valid TOML: {message}")
    })?;
    let mut settings: Vec<Setting> = Vec::new();
    for (key, item) in document.as_table().iter() {
        let line = document
            .as_table()
            .get_key_value(key)
            .and_then(|(k, _)| k.span())
            .map_or(1, |span| line_of_byte(text, span.start));
        let at = |message: String| format!("line {line}: {message}");
        let long = key.replace('_', "-");
        if long == "config" {
            return Err(at("config: a config file cannot name another (--config is for the \
                           command line)"
                .into()));
        }
        if matches!(item, Item::Table(_) | Item::ArrayOfTables(_)) {
            return Err(at(format!(
                "{key}: a table is not a setting (settings are top-level `key = value` lines, \
                 before any [section])"
            )));
        }
        let arg = match find_arg(command, &long) {
            Some(arg) if !matches!(long.as_str(), "help" | "version") => arg,
            _ => return Err(at(unknown_key(command, key))),
        };
        if let Some(earlier) = settings.iter().find(|s| s.long == long) {
            return Err(at(format!("{key}: set twice (also line {})", earlier.line)));
        }
        let args = args_of(&long, key, item, arg.get_action().takes_values()).map_err(at)?;
        check(command, key, &args).map_err(at)?;
        settings.push(Setting { long, args, line });
    }
    Ok(settings)
}

/// The argument whose long name (or alias) is `long`.
fn find_arg<'c>(command: &'c clap::Command, long: &str) -> Option<&'c Arg> {
    command.get_arguments().find(|arg| {
        arg.get_long() == Some(long)
            || arg.get_all_aliases().is_some_and(|aliases| aliases.contains(&long))
    })
}

/// `unknown key "treads"`, with clap's suggestion of a close flag name when it has one.
fn unknown_key(command: &clap::Command, key: &str) -> String {
    let flag = format!("--{}", key.replace('_', "-"));
    let suggestion =
        command.clone().try_get_matches_from(["ringserve", flag.as_str()]).err().and_then(|e| {
            let text = e.to_string();
            let tip = text.split("a similar argument exists: '--").nth(1)?;
            Some(tip.split('\'').next()?.to_string())
        });
    match suggestion {
        Some(name) => format!("unknown key {key:?} (did you mean {name:?}?)"),
        None => format!("unknown key {key:?} (keys are the long flags of ringserve --help)"),
    }
}

/// The flags a key stands for.
fn args_of(long: &str, key: &str, item: &Item, takes_value: bool) -> Result<Vec<String>, String> {
    let flag = format!("--{long}");
    let value = match item {
        Item::Value(value) => value,
        Item::None => return Ok(Vec::new()),
        Item::Table(_) | Item::ArrayOfTables(_) => {
            return Err(format!(
                "{key}: a table is not a setting (settings are top-level `key = value` lines)"
            ))
        }
    };
    if !takes_value {
        return match value {
            Value::Boolean(on) if *on.value() => Ok(vec![flag]),
            Value::Boolean(_) => Ok(Vec::new()),
            _ => Err(format!("{key}: expected true or false (it is a switch)")),
        };
    }
    let mut args = Vec::new();
    match value {
        Value::Array(array) => {
            for element in array.iter() {
                args.push(flag.clone());
                args.push(scalar(key, element)?);
            }
        }
        value => {
            args.push(flag);
            args.push(scalar(key, value)?);
        }
    }
    Ok(args)
}

/// A value as the command line would spell it.
fn scalar(key: &str, value: &Value) -> Result<String, String> {
    Ok(match value {
        Value::String(s) => s.value().clone(),
        Value::Integer(i) => i.value().to_string(),
        Value::Float(f) => f.value().to_string(),
        Value::Datetime(d) => d.value().to_string(),
        Value::Boolean(_) => {
            return Err(format!("{key}: expected a value, not true or false (it is not a switch)"))
        }
        Value::Array(_) | Value::InlineTable(_) => {
            return Err(format!("{key}: expected a string, a number, or a list of them"))
        }
    })
}

/// Lets clap parse one setting alone: its own validation (ranges, enums, addresses) with the
/// key's line. Relations between options (one requiring another) are checked by the final
/// parse of everything together.
fn check(command: &clap::Command, key: &str, args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        return Ok(());
    }
    let argv = std::iter::once("ringserve").chain(args.iter().map(String::as_str));
    match command.clone().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => Ok(()),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid");
            Err(format!("{key}: {}", first.strip_prefix("error: ").unwrap_or(first)))
        }
    }
}

/// The 1-based line of byte `offset`.
fn line_of_byte(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// The 1-based line of character `offset` (toml_edit's parse errors count characters).
fn line_of_char(text: &str, offset: usize) -> usize {
    text.chars().take(offset).filter(|c| *c == '\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(text: &str) -> Result<Vec<Setting>, String> {
        settings(text, &Cli::command())
    }

    fn flat(text: &str) -> Vec<String> {
        of(text).expect("valid settings").into_iter().flat_map(|s| s.args).collect()
    }

    #[test]
    fn keys_become_the_flags_they_name() {
        let text = "root = \"/srv\"\naddr = [\"0.0.0.0:80\", \"[::]:80\"]\naccess_log = \"/x\"\n\
                    threads = 4\nwarm = true\nno-watch = false\nwatch-interval = 0\n";
        assert_eq!(
            flat(text),
            [
                "--root",
                "/srv",
                "--addr",
                "0.0.0.0:80",
                "--addr",
                "[::]:80",
                "--access-log",
                "/x",
                "--threads",
                "4",
                "--warm",
                "--watch-interval",
                "0"
            ]
        );
        let lines: Vec<usize> = of(text).unwrap().iter().map(|s| s.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn bad_keys_and_values_name_their_line() {
        let cases = [
            (
                "root = \"/srv\"\n\ntreads = 4\n",
                "line 3: unknown key \"treads\" (did you mean \"threads\"?)",
            ),
            ("# c\nthreads = \"x\"\n", "line 2: threads: invalid value 'x' for '--threads <N>'"),
            ("threads = 0\n", "line 1: threads: invalid value '0'"),
            ("engine = \"fast\"\n", "line 1: engine: invalid value 'fast'"),
            (
                "root = [\"a\", \"b\"]\n",
                "line 1: root: the argument '--root <DIR>' cannot be used multiple times",
            ),
            ("warm = \"yes\"\n", "line 1: warm: expected true or false"),
            ("threads = true\n", "line 1: threads: expected a value, not true or false"),
            ("addr = \"nonsense\"\n", "line 1: addr: invalid value 'nonsense'"),
            ("\n\n[server]\nroot = \"x\"\n", "line 3: server: a table is not a setting"),
            (
                "access-log = \"a\"\naccess_log = \"b\"\n",
                "line 2: access_log: set twice (also line 1)",
            ),
            ("config = \"other.toml\"\n", "line 1: config: a config file cannot name another"),
            ("help = true\n", "line 1: unknown key \"help\""),
            ("threads = 2\nroot = \n", "line 2: not valid TOML"),
            ("a = 1\n\nthreads = [1,\n", "line 3: not valid TOML"),
        ];
        for (text, expected) in cases {
            let error = of(text).unwrap_err();
            assert!(error.starts_with(expected), "{text:?}: {error}");
            assert_eq!(error.lines().count(), 1, "{error}");
        }
    }

    #[test]
    fn the_command_line_overrides_the_file_and_replaces_its_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringserve.toml");
        std::fs::write(
            &path,
            "threads = 3\naddr = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nwarm = true\n",
        )
        .unwrap();
        let args = |extra: &[&str]| -> Vec<OsString> {
            ["ringserve", "--config", path.to_str().unwrap()]
                .iter()
                .chain(extra)
                .map(OsString::from)
                .collect()
        };
        let (cli, sources) = parse_args(args(&[])).unwrap();
        assert_eq!((cli.threads, cli.addr.len(), cli.warm), (Some(3), 2, true));
        assert_eq!(sources.locate("addr"), Some(format!("{} line 2", path.display())));
        assert_eq!(sources.locate("root"), None);
        let (cli, sources) =
            parse_args(args(&["--threads", "5", "--addr", "127.0.0.1:9"])).unwrap();
        assert_eq!(cli.threads, Some(5));
        assert_eq!(cli.addr.iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.1:9"]);
        assert!(cli.warm);
        assert_eq!(sources.locate("threads"), None, "the command line set it");
        let Err(ArgsError::File(e)) =
            parse_args(vec!["ringserve".into(), "--config".into(), "/nonexistent.toml".into()])
        else {
            panic!("a missing file is an error");
        };
        assert!(e.contains("/nonexistent.toml"), "{e}");
    }
}
