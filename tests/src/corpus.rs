//! The hostile corpus (tests/scripts/hostile_corpus.py, scapy), sent from a namespace.
use std::collections::BTreeMap;

use crate::netns::Netns;

/// Runs the corpus script's `mode` out of `iface` in `ns`; how many frames it sent per counter
/// the receiving host must move.
pub fn corpus(
    ns: &Netns,
    mode: &str,
    iface: &str,
    args: serde_json::Value,
) -> BTreeMap<String, u64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/hostile_corpus.py");
    let out = ns
        .command("/usr/bin/python3")
        .args([script, mode, iface])
        .arg(args.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
