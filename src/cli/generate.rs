//! `php-relaunch generate man|completions DIR` (hidden; a build with the `generate` feature, run by
//! scripts/package.sh): the man pages (section 8: a root command in /usr/sbin) and the bash, zsh and
//! fish completions, all from the one command tree. The synopsis names every option's value, and the
//! long help's tables become tagged paragraphs, so a page reads well at 80 columns (#19).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use clap::{ArgAction, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// Writes `php-relaunch.8` and one `php-relaunch-COMMAND.8` per command into `dir`.
pub fn man(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating '{}'", dir.display()))?;
    let mut cli = Cli::command();
    cli.build();
    let page = |command: clap::Command, name: &str| -> Result<()> {
        let path = dir.join(format!("{name}.8"));
        let command = command.name(name.to_owned());
        let usage = synopsis(&command, name);
        let extra = command.get_after_long_help().map(ToString::to_string);
        let (has_args, has_commands, has_version) = (
            command.get_arguments().any(|a| !a.is_hide_set()),
            command.get_subcommands().any(|s| !s.is_hide_set()),
            command.get_version().is_some(),
        );
        let man = clap_mangen::Man::new(command.override_usage(usage)).section("8");
        let mut roff = Vec::new();
        man.render_title(&mut roff)?;
        man.render_name_section(&mut roff)?;
        man.render_synopsis_section(&mut roff)?;
        man.render_description_section(&mut roff)?;
        if has_args {
            man.render_options_section(&mut roff)?;
        }
        if has_commands {
            man.render_subcommands_section(&mut roff)?;
        }
        if let Some(extra) = extra {
            roff.extend(tables(&extra).into_bytes());
        }
        if has_version {
            man.render_version_section(&mut roff)?;
        }
        File::create(&path)
            .and_then(|mut file| file.write_all(&roff))
            .with_context(|| format!("writing '{}'", path.display()))
    };
    for sub in cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        page(sub.clone(), &format!("php-relaunch-{}", sub.get_name()))?;
    }
    page(cli, "php-relaunch")
}

/// The synopsis with every option's value named (`[--expect TEXT]`), one form per line: the
/// options and arguments, then `COMMAND` when there are commands.
fn synopsis(command: &clap::Command, name: &str) -> String {
    let words = name.replacen("php-relaunch-", "php-relaunch ", 1);
    let mut form = words.clone();
    let mut positionals = String::new();
    for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
        let values: Vec<String> = arg.get_value_names().map_or_else(
            || vec![arg.get_id().as_str().to_uppercase()],
            |names| names.iter().map(ToString::to_string).collect(),
        );
        if arg.is_positional() {
            let value = values.join(" ");
            let _ = if arg.is_required_set() {
                write!(positionals, " {value}")
            } else {
                write!(positionals, " [{value}]")
            };
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        let takes_value = !matches!(
            arg.get_action(),
            ArgAction::SetTrue
                | ArgAction::SetFalse
                | ArgAction::Count
                | ArgAction::Help
                | ArgAction::HelpLong
                | ArgAction::HelpShort
                | ArgAction::Version
        );
        let _ = if takes_value {
            write!(form, " [--{long} {}]", values.join(" "))
        } else {
            write!(form, " [--{long}]")
        };
    }
    form.push_str(&positionals);
    if command.get_subcommands().any(|s| !s.is_hide_set()) {
        let _ = write!(form, "\n{words} COMMAND [ARGS]");
    }
    form
}

/// The long help's epilogue as roff: each `Heading:` block a section; a row `  TAG  text` (two
/// spaces or more between) a tagged paragraph, its deeper-indented lines going on under it; other
/// lines one filled paragraph.
fn tables(text: &str) -> String {
    let mut roff = String::new();
    for block in text
        .split("\n\n")
        .map(str::trim_end)
        .filter(|b| !b.is_empty())
    {
        let mut lines = block.lines();
        let Some(heading) = lines.next() else {
            continue;
        };
        let _ = writeln!(
            roff,
            ".SH \"{}\"",
            escape(heading.trim_end_matches(':')).to_uppercase()
        );
        let mut prose = false;
        for line in lines {
            let body = line.trim_start();
            let indent = line.len() - body.len();
            match body.split_once("  ") {
                _ if indent > 2 => {
                    let _ = writeln!(roff, ".br\n{}", escape(body));
                }
                Some((tag, rest)) => {
                    prose = false;
                    let _ = writeln!(
                        roff,
                        ".TP\n\\fB{}\\fR\n{}",
                        escape(tag),
                        escape(rest.trim())
                    );
                }
                None => {
                    if !prose {
                        roff.push_str(".PP\n");
                        prose = true;
                    }
                    let _ = writeln!(roff, "{}", escape(body));
                }
            }
        }
    }
    roff
}

/// Text made safe for roff: backslashes shown, no line taken for a request, dashes kept as typed.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

/// Writes the completions for bash (`php-relaunch`), zsh (`_php-relaunch`) and fish
/// (`php-relaunch.fish`) into `dir`.
pub fn completions(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating '{}'", dir.display()))?;
    let mut cli = Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cli, "php-relaunch", dir)
            .with_context(|| format!("writing {shell} completions into '{}'", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synopsis_names_values() {
        let mut cli = Cli::command();
        cli.build();
        let form = synopsis(&cli, "php-relaunch");
        assert!(form.contains(" [--expect TEXT]"), "{form}");
        assert!(form.contains(" [--dry-run]"), "{form}");
        assert!(form.contains(" URL TIMEOUT [EMAILS] [PHP_CGI]"), "{form}");
        assert!(form.ends_with("\nphp-relaunch COMMAND [ARGS]"), "{form}");
    }

    #[test]
    fn tables_become_tagged_paragraphs() {
        let roff =
            tables("Exit codes:\n  0  healthy\n  1  failing\n     and more\n  Prose here.\n");
        assert_eq!(
            roff,
            ".SH \"EXIT CODES\"\n.TP\n\\fB0\\fR\nhealthy\n.TP\n\\fB1\\fR\nfailing\n.br\nand more\n.PP\nProse here.\n"
        );
    }
}
