//! `--config FILE`: the command's options from a TOML file, and `check-config FILE`.
//!
//! A key is an option's name in snake_case (`max_requests_per_child = 10000`, `no_keepalive =
//! true`), with values written as on the command line (`"5s"`, `"64MiB"`, `"127.0.0.1"`); a list
//! gives a repeatable option several times. The file's options come before the command line's,
//! which win (an option given twice takes its last value), and both before the defaults (the
//! library's config structs', which the command line's definition takes). An unknown key, a
//! value the option does not take, or a table is an error naming the key and its line, and the
//! server does not start. HUP reads the file again (see `reread_config` in `main.rs`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{ArgAction, Command};

/// The command line with the options of the `--config` file it names (if any) put before its
/// own, so that the command line's win.
pub fn expand(argv: Vec<OsString>, command: &Command) -> anyhow::Result<Vec<OsString>> {
    let Some(path) = config_path(&argv) else { return Ok(argv) };
    let from_file = options_from(&path, command)?;
    let mut expanded = Vec::with_capacity(argv.len() + from_file.len());
    expanded.extend(argv.first().cloned());
    expanded.extend(from_file);
    expanded.extend(argv.into_iter().skip(1));
    Ok(expanded)
}

/// The value of `--config PATH` or `--config=PATH` among the server's options (the last one,
/// as clap keeps); none once a subcommand or `--` begins.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut found = None;
    let mut words = argv.iter().skip(1);
    while let Some(word) = words.next() {
        let Some(word) = word.to_str() else { continue };
        if word == "--" || !word.starts_with('-') && found.is_none() && is_subcommand(word) {
            break;
        }
        if word == "--config" {
            found = words.next().map(PathBuf::from);
        } else if let Some(path) = word.strip_prefix("--config=") {
            found = Some(PathBuf::from(path));
        }
    }
    found
}

fn is_subcommand(word: &str) -> bool {
    matches!(word, "status" | "ctl" | "check-config" | "help")
}

/// The file's options as command-line words, each checked against the command's definition.
pub fn options_from(path: &Path, command: &Command) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|span| text[..span.start].matches('\n').count() + 1);
        anyhow::anyhow!("config file {}{}: {}", path.display(), at_line(line), e.message())
    })?;
    let mut words = Vec::new();
    for (key, value) in &table {
        let line = line_of(&text, key);
        let place = format!("config file {}{}", path.display(), at_line(line));
        let name = key.replace('_', "-");
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(name.as_str()) && name != "config")
            .with_context(|| format!("{place}: unknown key `{key}`"))?;
        let flag = format!("--{name}");
        let takes_value = !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count);
        let repeatable = matches!(arg.get_action(), ArgAction::Append);
        // `--name=value`, one word: a value starting with `-` is not taken for an option.
        let with_value = |value: &toml::Value| -> anyhow::Result<OsString> {
            let mut word = OsString::from(format!("{flag}="));
            word.push(scalar(value).with_context(|| format!("{place}: `{key}`"))?);
            Ok(word)
        };
        let mut these: Vec<OsString> = Vec::new();
        match (value, takes_value) {
            (toml::Value::Boolean(true), false) => these.push(flag.clone().into()),
            (toml::Value::Boolean(false), false) => {}
            (_, false) => bail!("{place}: `{key}` is true or false"),
            (toml::Value::Array(items), true) if repeatable => {
                these.extend(items.iter().map(with_value).collect::<anyhow::Result<Vec<_>>>()?);
            }
            (toml::Value::Array(_), true) => bail!("{place}: `{key}` takes one value, not a list"),
            (value, true) => these.push(with_value(value)?),
        }
        // Checked alone, so that an error names this key and its line.
        let mut alone = vec![OsString::from(command.get_name())];
        alone.extend(these.iter().cloned());
        if let Err(error) = command.clone().try_get_matches_from(alone)
            && error.kind() != clap::error::ErrorKind::MissingRequiredArgument
        {
            let said = error.render().to_string();
            let first = said.lines().next().unwrap_or_default().trim_start_matches("error: ");
            bail!("{place}: `{key}`: {first}");
        }
        words.extend(these);
    }
    Ok(words)
}

/// A value as the command line writes it.
fn scalar(value: &toml::Value) -> anyhow::Result<OsString> {
    Ok(match value {
        toml::Value::String(text) => text.into(),
        toml::Value::Integer(n) => n.to_string().into(),
        toml::Value::Float(x) => x.to_string().into(),
        toml::Value::Boolean(b) => b.to_string().into(),
        other => bail!("a {} is not an option's value", other.type_str()),
    })
}

/// The line a top-level key is set on.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|index| index + 1)
}

fn at_line(line: Option<usize>) -> String {
    line.map(|n| format!(", line {n}")).unwrap_or_default()
}

/// `check-config FILE`: the file checked as the server would at start (its options, then the
/// settings together), and every option's effective value, with where it came from.
pub fn check(path: &Path, command: &Command) -> anyhow::Result<clap::ArgMatches> {
    let mut argv = vec![OsString::from(command.get_name())];
    argv.extend(options_from(path, command)?);
    let matches = command.clone().try_get_matches_from(argv).map_err(|e| anyhow::anyhow!("{}", e.render()))?;
    Ok(matches)
}

/// The effective options, one `key = value  # source` line each.
pub fn describe(matches: &clap::ArgMatches, command: &Command) -> String {
    let mut text = String::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long().filter(|long| !matches!(*long, "config" | "help" | "version")) else {
            continue;
        };
        let key = long.replace('-', "_");
        let source = match matches.value_source(id) {
            Some(clap::parser::ValueSource::DefaultValue) => "default",
            Some(clap::parser::ValueSource::CommandLine) => "file",
            Some(_) => "environment",
            None => continue, // not set, no default
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| raw.map(|v| format!("{:?}", v.to_string_lossy())).collect())
            .unwrap_or_else(|| vec!["true".to_owned()]);
        let value = match values.as_slice() {
            // true, false and numbers as TOML writes them, so that the output reads back.
            [one] if one == "\"true\"" || one == "\"false\"" || one.trim_matches('"').parse::<i64>().is_ok() => {
                one.trim_matches('"').to_owned()
            }
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        text.push_str(&format!("{key} = {value}  # {source}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_path_is_found_in_either_spelling() {
        let argv = |words: &[&str]| words.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(config_path(&argv(&["x", "--port", "1", "--config", "a.toml"])), Some("a.toml".into()));
        assert_eq!(config_path(&argv(&["x", "--config=b.toml"])), Some("b.toml".into()));
        assert_eq!(config_path(&argv(&["x", "--port", "1"])), None);
    }

    #[test]
    fn a_key_is_found_on_its_line() {
        assert_eq!(line_of("# c\nport = 1\n  max_clients=3\n", "max_clients"), Some(3));
        assert_eq!(line_of("port_x = 1\n", "port"), None);
    }
}
