//! `php-relaunch generate man|completions DIR` (hidden; for packaging): the man pages (section 8: a
//! root command in /usr/sbin) and the bash, zsh and fish completions, all from the one command tree.

use std::fs::{self, File};
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// Writes `php-relaunch.8` and one `php-relaunch-COMMAND.8` per command into `dir`.
pub fn man(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating '{}'", dir.display()))?;
    let mut cli = Cli::command();
    cli.build();
    let page = |command: clap::Command, name: &str| -> Result<()> {
        let path = dir.join(format!("{name}.8"));
        let mut file =
            File::create(&path).with_context(|| format!("creating '{}'", path.display()))?;
        clap_mangen::Man::new(command.name(name.to_owned()))
            .section("8")
            .render(&mut file)
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
