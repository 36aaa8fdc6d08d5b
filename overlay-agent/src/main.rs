//! CLI dispatch only: each subcommand's work lives in the library modules.
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use overlay_agent::{
    dataplane::{PinDir, pins},
    inspect::{self, Table},
};

#[derive(Parser)]
#[command(
    name = "overlay-agent",
    version,
    about = "eBPF VXLAN overlay: agent and inspection CLI"
)]
struct Cli {
    /// This node's name; also selects its bpffs pin directory <pin-root>/<node>.
    #[arg(long, global = true, env = "OVERLAY_NODE", default_value_t = default_node())]
    node: String,
    /// Where nodes pin their maps and links.
    #[arg(long, global = true, env = "OVERLAY_PIN_ROOT", default_value = pins::DEFAULT_ROOT)]
    pin_root: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print one of the node's dataplane maps.
    Maps {
        #[arg(value_enum)]
        table: Table,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn default_node() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

fn run(cli: Cli) -> Result<()> {
    let pins = PinDir::new(&cli.pin_root, &cli.node)?;
    match cli.command {
        Command::Maps { table, json } => print!("{}", inspect::render(&pins, table, json)?),
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            eprintln!("overlay-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
