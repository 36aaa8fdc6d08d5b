//! `cargo xtask fuzz`: structure-aware frames through the loaded programs, each held against
//! the reference model (tests/src/fuzz). Half the frames over an IPv4 underlay, half over an
//! IPv6 one; exits non-zero on any disagreement, each shown with its frame and the seed to see
//! it again (`--seed S --show N`).
use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Parser;
use overlay_tests::fuzz::run::{self, Options, Summary};

#[derive(Parser)]
#[command(name = "overlay-fuzz")]
struct Args {
    /// Frames in all.
    #[arg(long, default_value_t = 10_000_000)]
    frames: u64,
    /// The run's seed (default: from the clock, printed).
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Only this underlay: ipv4 or ipv6 (default both, half the frames each).
    #[arg(long, value_parser = ["ipv4", "ipv6"])]
    underlay: Option<String>,
    /// Frames between two reads of the counters.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Instead: build frame N of the seed (over --underlay, default ipv4) and show what the
    /// model and the program make of it.
    #[arg(long)]
    show: Option<u64>,
}

/// Decimal or 0x-prefixed hexadecimal.
fn parse_seed(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?} is not a seed: {e}"))
}

fn main() -> ExitCode {
    match fuzz(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("overlay-fuzz: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn fuzz(args: Args) -> Result<bool> {
    overlay_tests::require_root();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let families: Vec<bool> = match args.underlay.as_deref() {
        Some("ipv6") => vec![true],
        Some(_) => vec![false],
        None if args.show.is_some() => vec![false],
        None => vec![false, true],
    };
    if let Some(index) = args.show {
        let opts = Options {
            seed,
            first: 0,
            frames: 0,
            ipv6_underlay: families[0],
            batch: 1,
        };
        println!("{}", run::show(&opts, index)?);
        return Ok(true);
    }
    println!("seed {seed:#x}: {} frames", args.frames);
    let mut total = Summary::default();
    let per = args.frames / families.len() as u64;
    for (i, &ipv6_underlay) in families.iter().enumerate() {
        let opts = Options {
            seed,
            // Frame numbers go on across the two labs, so each names one frame.
            first: i as u64 * per,
            frames: if i + 1 == families.len() {
                args.frames - per * i as u64
            } else {
                per
            },
            ipv6_underlay,
            batch: args.batch,
        };
        let family = if ipv6_underlay { "IPv6" } else { "IPv4" };
        let mut last = Instant::now();
        let summary = run::run(&opts, |s| {
            if last.elapsed() >= Duration::from_secs(10) || s.frames == opts.frames {
                last = Instant::now();
                println!(
                    "{family} underlay: {}/{} frames, {:.0} frames/s, {} disagreements",
                    s.frames,
                    opts.frames,
                    s.frames as f64 / s.elapsed.as_secs_f64(),
                    s.disagreed()
                );
            }
        })?;
        println!(
            "{family} underlay, frames per outcome:\n{}",
            summary.table()
        );
        total.add(&summary);
    }
    for d in &total.disagreements {
        println!("{d}");
    }
    if total.more > 0 {
        println!("... and {} more disagreements", total.more);
    }
    println!(
        "seed {seed:#x}: {} frames in {:.0} s ({:.0} frames/s), {} disagreements with the model",
        total.frames,
        total.elapsed.as_secs_f64(),
        total.frames as f64 / total.elapsed.as_secs_f64(),
        total.disagreed()
    );
    Ok(total.disagreed() == 0)
}
