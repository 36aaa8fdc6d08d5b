//! `cargo xtask install` into a temporary prefix, as an operator would run it: every file where
//! the system looks for it, the units valid for systemd, completions that load, and two hosts
//! whose agents run the installed binary under exactly the capability set the unit allows,
//! from a clean node (programs loaded, not adopted); then `uninstall` removes exactly that.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use overlay_tests::deployment::{Deployment, built_binary, ping};

struct Installed {
    root: PathBuf,
}

impl Installed {
    fn prefix(&self) -> PathBuf {
        self.root.join("usr/local")
    }

    fn layout_args(&self) -> Vec<String> {
        [
            ("--prefix", self.prefix()),
            ("--cni-bin-dir", self.root.join("opt/cni/bin")),
            ("--sysconfdir", self.root.join("etc")),
        ]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.to_string_lossy().into_owned()])
        .collect()
    }

    fn xtask(&self, command: &str, extra: &[&str]) -> String {
        let out = Command::new(built_binary("xtask"))
            .arg(command)
            .args(self.layout_args())
            .args(extra)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "xtask {command}: {said}");
        said
    }

    fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out.sort();
        out
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The unit's CapabilityBoundingSet as setpriv's --bounding-set argument.
fn bounding_set(unit: &str) -> String {
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds the agent's capabilities");
    let caps: Vec<String> = caps
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    format!("-all,{}", caps.join(","))
}

#[test]
fn install_then_run_under_the_units_capabilities_then_uninstall() {
    let inst = Installed {
        root: std::env::temp_dir().join(format!("ovt-install-{}", std::process::id())),
    };
    inst.xtask("install", &["--debug"]);
    let prefix = inst.prefix();
    let units = prefix.join("lib/systemd/system");
    for path in [
        prefix.join("bin/overlay-agent"),
        inst.root.join("opt/cni/bin/overlay"),
        prefix.join("share/man/man1/overlay-agent.1"),
        prefix.join("share/man/man1/overlay-agent-endpoint-add.1"),
        prefix.join("share/bash-completion/completions/overlay-agent"),
        prefix.join("share/zsh/site-functions/_overlay-agent"),
        prefix.join("share/fish/vendor_completions.d/overlay-agent.fish"),
        units.join("overlay-agent.service"),
        units.join("overlay-docker-plugin.service"),
        inst.root.join("etc/overlay/agent.env"),
    ] {
        assert!(path.is_file(), "{} was not installed", path.display());
    }
    let agent = prefix.join("bin/overlay-agent");
    let unit = std::fs::read_to_string(units.join("overlay-agent.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={} run", agent.display())),
        "{unit}"
    );

    // systemd's own check of the units (the man pages they name found where installed).
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args([
            units.join("overlay-agent.service"),
            units.join("overlay-docker-plugin.service"),
        ])
        .env("MANPATH", prefix.join("share/man"))
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // The installed completion script loads in bash.
    let bash = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p overlay-agent",
            prefix
                .join("share/bash-completion/completions/overlay-agent")
                .display()
        ))
        .output()
        .unwrap();
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );

    // Two fresh hosts whose agents are the installed binary with only the unit's capabilities.
    let mut d = Deployment::new("in", &[true, true]).unwrap();
    for i in 0..2 {
        d.kill_agent(i);
        d.cli(i, &["teardown"]).unwrap();
    }
    d.agent_command = vec![
        "setpriv".into(),
        format!("--bounding-set={}", bounding_set(&unit)).into(),
        "--".into(),
        agent.clone().into(),
    ];
    for i in 0..2 {
        d.restart_agent(i).unwrap();
    }
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    let c1 = d.add_container(0, "c1", "blue", None).unwrap();
    let c2 = d.add_container(1, "c2", "blue", None).unwrap();
    d.wait_arp_everywhere(42, &[c1.1, c2.1], true).unwrap();
    assert!(ping(d.container(c1.0), c2.1), "{}", d.hosts[0].log());
    assert!(ping(d.container(c2.0), c1.1), "{}", d.hosts[1].log());
    let status = d.cli(0, &["status"]).unwrap();
    assert!(status.contains("running"), "{status}");
    drop(d);

    // An edited settings file stays; everything else goes.
    let settings = inst.root.join("etc/overlay/agent.env");
    std::fs::write(&settings, "OVERLAY_UNDERLAY=eth9\n").unwrap();
    let said = inst.xtask("uninstall", &[]);
    assert!(said.contains("kept"), "{said}");
    assert_eq!(inst.files(), std::slice::from_ref(&settings), "{said}");
    std::fs::remove_file(&settings).unwrap();

    // Installed again and uninstalled untouched: nothing at all is left.
    inst.xtask("install", &["--debug"]);
    inst.xtask("uninstall", &[]);
    assert_eq!(inst.files(), Vec::<PathBuf>::new());
}
