//! The CLI reference (docs/cli.md) rendered from the clap command tree itself, so the page
//! cannot drift from the binary: `overlay-agent cli-reference` prints it, `cargo xtask docs`
//! writes it, and a test fails when the file and the binary disagree. The man pages and the
//! shell completions come from the same tree (`overlay-agent man`, `completions`).
use std::{fmt::Write, path::Path};

use anyhow::{Context as _, Result};

use clap::Command;

/// Every visible command of `cmd`, depth first, as markdown: a contents list, then each
/// command's long help (`--help`) as it prints, under a heading with its full name. The global
/// options are shown once, under the top command.
///
/// What would make the page depend on who renders it is left out: the values of environment
/// variables set where it is rendered (the variables' names stay). A default taken from the
/// machine (a host name) must be replaced by the caller before it comes here.
pub fn markdown(cmd: Command) -> String {
    let mut cmd = cmd.term_width(100).mut_args(|a| a.hide_env_values(true));
    cmd.build();
    let mut pages = Vec::new();
    collect(&mut cmd, &mut Vec::new(), &mut pages);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# CLI reference\n\n<!-- Generated from the clap definitions by `cargo xtask docs` \
         (`overlay-agent cli-reference`); do not edit by hand: a test compares this file with \
         the binary. -->\n\nEvery command's `--help`. The global options are shown once, under \
         `{}`: every command takes them, before or after its name.\n",
        cmd.get_name()
    );
    for (name, _) in &pages {
        let _ = writeln!(out, "- [`{name}`](#{})", anchor(name));
    }
    for (name, help) in &pages {
        let _ = writeln!(out, "\n## {name}\n\n```text\n{}\n```", help.trim_end());
    }
    out
}

/// `cmd` and its visible subcommands (not clap's own `help`), each with its full name.
fn collect(cmd: &mut Command, path: &mut Vec<String>, pages: &mut Vec<(String, String)>) {
    path.push(cmd.get_name().to_string());
    let name = path.join(" ");
    // clap indents its blank lines; trailing blanks are what editors strip, and the page must
    // survive being opened and saved.
    // The global options are the same on every command: shown once, with the top command.
    let mut shown = cmd.clone();
    if path.len() > 1 {
        shown = shown.mut_args(|a| if a.is_global_set() { a.hide(true) } else { a });
    }
    let help: Vec<String> = (shown.render_long_help().to_string().lines())
        .map(|line| line.trim_end().to_string())
        .collect();
    pages.push((name, help.join("\n")));
    for sub in cmd.get_subcommands_mut() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        collect(sub, path, pages);
    }
    path.pop();
}

/// One man page per visible command (`overlay-agent.1`, `overlay-agent-network-create.1`, ...)
/// in `dir`, section 1; the names of the pages written.
pub fn man_pages(cmd: Command, dir: &Path) -> Result<Vec<String>> {
    let mut cmd = cmd.mut_args(|a| a.hide_env_values(true));
    cmd.build();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    write_pages(&cmd, cmd.get_name(), dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: &Command, name: &str, dir: &Path, written: &mut Vec<String>) -> Result<()> {
    let file = format!("{name}.1");
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone().name(name.to_string()))
        .render(&mut page)
        .with_context(|| format!("rendering {file}"))?;
    let path = dir.join(&file);
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    written.push(file);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// The completion script for `shell`, as the shell's completion directory expects it.
pub fn completions(mut cmd: Command, shell: clap_complete::Shell) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

/// The anchor GitHub gives a heading: lower case, spaces as dashes, other punctuation gone.
fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::{Arg, Command};

    use super::*;

    #[test]
    fn every_visible_command_gets_a_section_and_an_entry() {
        let cmd = Command::new("tool")
            .about("A tool")
            .arg(
                Arg::new("verbose")
                    .long("verbose")
                    .global(true)
                    .action(clap::ArgAction::SetTrue),
            )
            .subcommand(
                Command::new("net")
                    .about("Networks")
                    .subcommand(Command::new("add").arg(Arg::new("name").long("name"))),
            )
            .subcommand(Command::new("secret").hide(true));
        let md = markdown(cmd);
        for heading in ["## tool\n", "## tool net\n", "## tool net add\n"] {
            assert!(md.contains(heading), "{heading:?} in\n{md}");
        }
        assert!(md.contains("- [`tool net add`](#tool-net-add)"), "{md}");
        assert!(md.contains("Usage: tool net add [OPTIONS]"), "{md}");
        assert!(!md.contains("secret"), "{md}");
        assert_eq!(
            md.matches("--verbose").count(),
            1,
            "global options once:\n{md}"
        );
        assert!(!md.contains("## tool help"), "{md}");
    }

    #[test]
    fn a_man_page_per_visible_command_and_completions_for_each_shell() {
        let cmd = Command::new("tool")
            .about("A tool")
            .subcommand(
                Command::new("net")
                    .about("Networks")
                    .subcommand(Command::new("add").about("Adds one")),
            )
            .subcommand(Command::new("secret").hide(true));
        let dir = std::env::temp_dir().join(format!("overlay-man-{}", std::process::id()));
        let written = man_pages(cmd.clone(), &dir).unwrap();
        assert_eq!(written, ["tool.1", "tool-net.1", "tool-net-add.1"]);
        let page = std::fs::read_to_string(dir.join("tool-net-add.1")).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        assert!(page.contains("Adds one"), "{page}");
        std::fs::remove_dir_all(&dir).unwrap();
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = String::from_utf8(completions(cmd.clone(), shell)).unwrap();
            assert!(
                script.contains("tool") && script.contains("net"),
                "{shell}: {script}"
            );
        }
    }

    #[test]
    fn the_values_of_environment_variables_stay_out() {
        // SAFETY: only this test reads the variable.
        unsafe { std::env::set_var("OVERLAY_TEST_CLI_REFERENCE", "secret-value") };
        let cmd = Command::new("tool").arg(
            Arg::new("x")
                .long("x")
                .env("OVERLAY_TEST_CLI_REFERENCE")
                .help("X"),
        );
        let md = markdown(cmd);
        assert!(md.contains("OVERLAY_TEST_CLI_REFERENCE"), "{md}");
        assert!(!md.contains("secret-value"), "{md}");
    }
}
