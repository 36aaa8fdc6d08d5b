//! The dataplane fuzzer in small (issue 25): a fixed seed's 100,000 structure-aware frames, half
//! over an IPv4 underlay and half over an IPv6 one, through the loaded programs, with not one
//! disagreement with the reference model (tests/src/fuzz). `cargo xtask fuzz` runs ten million.
use overlay_tests::fuzz::run::{self, Options};

const SEED: u64 = 0x0f5e_ed25;
const FRAMES: u64 = 50_000;

fn fuzz(ipv6_underlay: bool) {
    let opts = Options {
        seed: SEED,
        first: if ipv6_underlay { FRAMES } else { 0 },
        frames: FRAMES,
        ipv6_underlay,
        batch: 1000,
    };
    let summary = run::run(&opts, |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    println!("frames per outcome:\n{}", summary.table());
    assert_eq!(summary.frames, FRAMES);
    let shown: Vec<String> = summary
        .disagreements
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert!(
        summary.disagreed() == 0,
        "{} disagreements with the model:\n{}",
        summary.disagreed(),
        shown.join("\n")
    );
    // The frames reach the deep paths, not only the first checks.
    for deep in [
        "encap",
        "decap",
        "decap_flood",
        "arp_reply",
        "ndp_reply",
        "local_deliver",
        "drop_internal",
        "drop_tunnel_port",
    ] {
        let n = overlay_common::Counter::ALL
            .iter()
            .position(|c| c.name() == deep)
            .map_or(0, |i| summary.outcomes[i]);
        assert!(n >= 50, "only {n} frames reached {deep}");
    }
}

#[test]
fn the_programs_agree_with_the_model_over_an_ipv4_underlay() {
    fuzz(false);
}

#[test]
fn the_programs_agree_with_the_model_over_an_ipv6_underlay() {
    fuzz(true);
}
