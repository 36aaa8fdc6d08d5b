//! The driver as Docker's managed plugin: `cargo xtask docker-plugin` makes the directory,
//! each host's real dockerd (its own network and mount namespace) creates the plugin from it,
//! is given the node's settings with `docker plugin set`, enables it and runs it itself; a
//! network made with it spans both hosts; the plugin is disabled and removed cleanly.
use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, ensure};
use overlay_tests::{
    deployment::{Deployment, built_binary, wait_for},
    docker::DockerHost,
    fixture::TEST_PIN_ROOT,
};

const PLUGIN: &str = "overlay-ebpf";

/// `cargo xtask docker-plugin --out <dir> --binary <the debug overlay-agent>`: the xtask's own
/// directory, with the binary this test run built (a static release build takes minutes).
fn plugin_dir(out: &Path) -> Result<()> {
    let run = Command::new(built_binary("xtask"))
        .args(["docker-plugin", "--out"])
        .arg(out)
        .arg("--binary")
        .arg(built_binary("overlay-agent"))
        .output()?;
    ensure!(
        run.status.success(),
        "xtask docker-plugin: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    Ok(())
}

/// The plugin created from `dir`, given host `host`'s settings, enabled.
fn install(d: &Deployment, docker: &DockerHost, dir: &Path) -> Result<()> {
    docker.docker(&["plugin", "create", PLUGIN, &dir.display().to_string()])?;
    // The etcd files' directory: the test's own, as /etc/overlay may not exist here.
    let etc = docker.dir().join("etc-overlay");
    std::fs::create_dir_all(&etc)?;
    docker.docker(&[
        "plugin",
        "set",
        PLUGIN,
        &format!("OVERLAY_ETCD={}", d.etcd.url),
        &format!("OVERLAY_NODE={}", d.hosts[docker.host].name()),
        &format!("OVERLAY_PIN_ROOT={TEST_PIN_ROOT}"),
        &format!("etc.source={}", etc.display()),
    ])?;
    docker.docker(&["plugin", "enable", PLUGIN])?;
    Ok(())
}

fn reaches(docker: &DockerHost, from: &str, to: std::net::Ipv4Addr) -> Result<()> {
    wait_for(Duration::from_secs(5), || docker.ping(from, to))
        .map(drop)
        .with_context(|| format!("container {from} on h{} cannot reach {to}", docker.host + 1))
}

#[test]
fn the_managed_plugin_made_by_xtask_serves_a_network_across_hosts() -> Result<()> {
    let d = Deployment::new("dkp", &[true, true])?;
    let docker = [
        DockerHost::start_without_plugin(&d, 0, "dkph1")?,
        DockerHost::start_without_plugin(&d, 1, "dkph2")?,
    ];
    let dir = docker[0].dir().join("plugin");
    plugin_dir(&dir)?;
    ensure!(
        dir.join("config.json").is_file() && dir.join("rootfs/usr/bin/overlay-agent").is_file()
    );
    for h in &docker {
        install(&d, h, &dir)?;
    }
    let ls = docker[0].docker(&["plugin", "ls", "--format", "{{.Name}} {{.Enabled}}"])?;
    ensure!(ls == format!("{PLUGIN}:latest true"), "plugin ls: {ls}");

    // Docker registers a managed plugin's drivers under its full name only: libnetwork loads
    // the plugin by the name typed, then looks the driver up by that name, and finds only
    // `overlay-ebpf:latest` (20.10, and moby's code today). The docs say so; this keeps them
    // true.
    let untagged = docker[0]
        .create_network("nope", &["--subnet", "10.21.0.0/16"])
        .unwrap_err();
    ensure!(
        format!("{untagged:#}").contains("could not resolve driver overlay-ebpf in registry"),
        "{untagged:#}"
    );
    let full = format!("{PLUGIN}:latest");
    for h in &docker {
        h.docker(&[
            "network",
            "create",
            "-d",
            &full,
            "--ipam-driver",
            &full,
            "--subnet",
            "10.20.0.0/16",
            "blue",
        ])?;
    }
    let a = docker[0].run("alpha", "blue")?;
    let b = docker[1].run("bravo", "blue")?;
    ensure!(a != b, "both containers got {a}");
    reaches(&docker[0], "alpha", b)?;
    reaches(&docker[1], "bravo", a)?;
    // The plugin ran as the node named, and saw the agent's maps through its bpffs mount.
    for h in &docker {
        let log = h.dockerd_log();
        let node = d.hosts[h.host].name();
        ensure!(
            log.contains(&format!("IPAM driver overlay-ebpf of node {node}")),
            "h{}: the plugin did not start as {node}:\n{log}",
            h.host + 1
        );
        ensure!(!log.contains("maps do not show"), "h{}:\n{log}", h.host + 1);
    }
    let endpoints = d.cli(0, &["endpoint", "ls"])?;
    for ip in [a, b] {
        ensure!(
            endpoints.contains(&ip.to_string()),
            "etcd lacks {ip}:\n{endpoints}"
        );
    }

    // Taken down as a user would: containers, network, then the plugin.
    for (h, name) in [(&docker[0], "alpha"), (&docker[1], "bravo")] {
        h.docker(&["rm", "-f", name])?;
        h.docker(&["network", "rm", "blue"])?;
        h.docker(&["plugin", "disable", PLUGIN])?;
        h.docker(&["plugin", "rm", PLUGIN])?;
        let left = h.docker(&["plugin", "ls", "-q"])?;
        ensure!(left.is_empty(), "plugins left on h{}: {left}", h.host + 1);
    }
    let endpoints = d.cli(0, &["endpoint", "ls", "--json"])?;
    ensure!(
        !endpoints.contains(&a.to_string()) && !endpoints.contains(&b.to_string()),
        "endpoints left in etcd: {endpoints}"
    );
    Ok(())
}
