//! The CNI plugin, installed as `/opt/cni/bin/overlay`: an adapter from CNI's ADD, DEL, CHECK,
//! STATUS, GC and VERSION onto the attachments `overlay-agent endpoint add/rm` make
//! (`commands`). It acts as the CLI does on the node: it finds etcd, the key prefix and the
//! pin directory in the status file of the node's agent, so a conflist entry needs nothing but
//! `{"type": "overlay", "network": "blue"}`.
//!
//! Runtimes differ (`../shared/RUNTIMES.md`): podman calls VERSION, ADD, DEL; containerd's
//! `ctr` calls ADD and DEL with an empty `CNI_NETNS`, and never DEL at all for a task killed
//! and removed, which is what GC is for. Every attachment's names derive from the container
//! ID and interface name alone, so DEL and GC find what a killed ADD left half-made.
pub mod protocol;

use std::{io::Read as _, path::PathBuf, process::ExitCode};

use protocol::{AddResult, Code, Dns, Error, Interface, IpConfig, NetConf, Route, VersionResult};

use crate::{
    cli::commands::{self, Attach, Ctx},
    dataplane::{PinDir, pins},
    netlink::{Netlink, Netns},
    status,
    store::{self, Store, schema},
};

/// What the runtime passes in the environment.
#[derive(Debug, Default)]
pub struct Invocation {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
}

impl Invocation {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Self {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
        }
    }

    fn require(&self, what: &str, value: &str) -> Result<(), Error> {
        if value.is_empty() {
            return Err(Error::new(
                Code::InvalidEnvironment,
                format!("{what} is not set: CNI {} needs it", self.command),
            ));
        }
        Ok(())
    }
}

/// Prefix of the endpoint names this plugin makes.
pub const NAME_PREFIX: &str = "cni-";

/// The endpoint name of a container's attachment: a stable hash of the network
/// configuration's name, the container ID and the interface name, as runtimes' IDs are too
/// long for names and may share a prefix (containerd prefixes its namespace).
pub fn endpoint_name(config: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "{NAME_PREFIX}{:016x}",
        crate::shared::hash::of(&format!("{config}/{container_id}/{ifname}"))
    )
}

/// Whose attachments a GC may collect: those made through the same network configuration.
/// Two runtimes on one node should use two configuration names, as each GCs only what it
/// knows.
pub fn owner(config: &str) -> String {
    format!("cni:{config}")
}

/// The binary's entry point: reads the environment and stdin, prints a result or an error
/// object on stdout.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .target(env_logger::Target::Stderr)
        .init();
    let inv = Invocation::from_env();
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Err(e) => Err(Error::new(Code::Io, format!("reading stdin: {e}"))),
        Ok(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| Error::new(Code::Io, format!("starting: {e}")))
            .and_then(|rt| rt.block_on(handle(&inv, &stdin))),
    };
    match outcome {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(mut e) => {
            if e.cni_version.is_empty() {
                e.cni_version = protocol::reply_version(&stdin);
            }
            println!("{}", serde_json::to_string(&e).expect("serializable"));
            ExitCode::FAILURE
        }
    }
}

/// One CNI call: what to print on success (nothing for DEL, STATUS, GC).
pub async fn handle(inv: &Invocation, stdin: &[u8]) -> Result<Option<String>, Error> {
    if inv.command == "VERSION" {
        return json(&VersionResult {
            cni_version: protocol::reply_version(stdin),
            supported_versions: protocol::SUPPORTED_VERSIONS.to_vec(),
        });
    }
    let conf = protocol::parse_conf(stdin)?;
    if !conf.cni_version.is_empty()
        && !protocol::SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str())
    {
        return Err(Error::new(
            Code::IncompatibleVersion,
            format!(
                "cniVersion {:?} is not supported (supported: {})",
                conf.cni_version,
                protocol::SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    match inv.command.as_str() {
        "ADD" => add(inv, &conf).await,
        "DEL" => del(inv, &conf).await.map(|()| None),
        "CHECK" => check(inv, &conf).await.map(|()| None),
        "STATUS" => status(&conf).map(|()| None),
        "GC" => gc(&conf).await.map(|()| None),
        "" => Err(Error::new(
            Code::InvalidEnvironment,
            "CNI_COMMAND is not set: this is a CNI plugin, run by a container runtime",
        )),
        other => Err(Error::new(
            Code::InvalidEnvironment,
            format!("unknown CNI_COMMAND {other:?}"),
        )),
    }
}

fn json(value: &impl serde::Serialize) -> Result<Option<String>, Error> {
    serde_json::to_string(value)
        .map(Some)
        .map_err(|e| Error::new(Code::Io, format!("encoding the result: {e}")))
}

fn network_of(conf: &NetConf) -> Result<&str, Error> {
    let network = conf.network.as_deref().ok_or_else(|| {
        Error::new(
            Code::InvalidConfig,
            format!(
                "the plugin entry of {:?} has no \"network\" key: name the overlay network to join, e.g. \"network\": \"blue\"",
                conf.name
            ),
        )
    })?;
    schema::check_name("network", network)
        .map_err(|e| Error::new(Code::InvalidConfig, format!("{e:#}")))?;
    Ok(network)
}

fn run_dir(conf: &NetConf) -> PathBuf {
    conf.run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(status::DEFAULT_RUN_DIR))
}

/// The node: the configuration's `node`, else the hostname, else the only node whose agent
/// writes its status in `runDir` (an agent started with `--node` on a host named otherwise).
fn node_of(conf: &NetConf) -> String {
    if let Some(node) = &conf.node {
        return node.clone();
    }
    let host = status::default_node();
    let dir = run_dir(conf);
    if status::status_path(&dir, &host).exists() {
        return host;
    }
    let nodes: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    match <[String; 1]>::try_from(nodes) {
        Ok([only]) => only,
        Err(_) => host,
    }
}

/// Acts as the CLI on this node would: etcd, prefix and pins from the agent's status. ADD and
/// CHECK need the agent running in this network namespace (it is what serves an attachment);
/// DEL and GC only need etcd, so that a runtime can clean up while the agent is down.
async fn node_ctx(conf: &NetConf, agent_must_run: bool) -> Result<Ctx, Error> {
    let node = node_of(conf);
    let later = |e: anyhow::Error| Error::new(Code::TryAgainLater, format!("{e:#}"));
    let status = if agent_must_run {
        let status = status::running(&run_dir(conf), &node).map_err(later)?;
        let here = status::netns_id();
        if !status.netns.is_empty() && status.netns != here {
            return Err(Error::new(
                Code::InvalidConfig,
                format!(
                    "node {node}'s agent runs in another network namespace ({}) than this runtime ({here}): containers attached here would never be served; run the runtime in the agent's namespace",
                    status.netns
                ),
            ));
        }
        Some(status)
    } else {
        status::last_status(&run_dir(conf), &node).ok()
    };
    // The agent's own way to etcd (endpoints, prefix, certificates, user), `etcd` in the
    // configuration overriding the endpoints.
    let mut etcd = status
        .as_ref()
        .and_then(|s| s.access.clone())
        .unwrap_or_else(|| {
            store::Etcd::plain(
                &[store::DEFAULT_ENDPOINT.to_string()],
                schema::DEFAULT_PREFIX,
            )
        });
    if let Some(endpoints) = &conf.etcd {
        etcd.endpoints = endpoints.clone();
    }
    let pins = match status.as_ref().map(|s| s.pins.clone()) {
        Some(dir) if !dir.as_os_str().is_empty() => PinDir::at(dir),
        _ => PinDir::new(pins::DEFAULT_ROOT, &node).map_err(later)?,
    };
    let store = Store::connect(&etcd).await.map_err(later)?;
    Ok(Ctx { store, node, pins })
}

fn failed(e: anyhow::Error) -> Error {
    Error::new(Code::Failed, format!("{e:#}"))
}

async fn add(inv: &Invocation, conf: &NetConf) -> Result<Option<String>, Error> {
    let network = network_of(conf)?;
    inv.require("CNI_CONTAINERID", &inv.container_id)?;
    inv.require("CNI_IFNAME", &inv.ifname)?;
    inv.require("CNI_NETNS", &inv.netns)?;
    let ns = Netns::open(&inv.netns)
        .map_err(|e| Error::new(Code::InvalidEnvironment, format!("{e:#}")))?;
    let ctx = node_ctx(conf, true).await?;
    let known = ctx
        .store
        .networks()
        .await
        .map_err(|e| Error::new(Code::TryAgainLater, format!("{e:#}")))?;
    let Some(net) = known.into_iter().find(|n| n.name == network) else {
        return Err(Error::new(
            Code::InvalidConfig,
            format!(
                "overlay network {network} does not exist (`overlay-agent network ls` lists them)"
            ),
        ));
    };
    let mut req = Attach::new(
        endpoint_name(&conf.name, &inv.container_id, &inv.ifname),
        network.to_string(),
        None,
    )
    .map_err(failed)?;
    req.ifname = Some(inv.ifname.clone());
    req.mtu = conf.mtu;
    req.owner = Some(owner(&conf.name));
    req.services = conf.services.clone();
    let made = commands::endpoint_add(&ctx, &req, &ns)
        .await
        .map_err(failed)?;
    let ep = &made.endpoint;
    // Served means the agent has it in its maps and its port's program attached: until then
    // the container's first ARP requests go unanswered. Not served in time is a failed ADD.
    if !commands::wait_served(&ctx, ep, true).await.unwrap_or(false) {
        let _ = commands::endpoint_release(&ctx, network, req.name()).await;
        return Err(Error::new(
            Code::TryAgainLater,
            format!(
                "node {}'s agent did not serve {} within 3 s (is it stuck? `overlay-agent status`); nothing was left attached",
                ctx.node, ep.ip
            ),
        ));
    }
    let port = crate::shared::ifnames::port_name(network, req.name());
    // The host port's MAC is a courtesy of the result: not worth failing an ADD that worked.
    let port_mac = match Netlink::new() {
        Ok(host) => host.mac(&port).await.ok().flatten(),
        Err(_) => None,
    };
    let version = if conf.cni_version.is_empty() {
        protocol::LATEST.to_string()
    } else {
        conf.cni_version.clone()
    };
    let ours = AddResult {
        cni_version: version,
        interfaces: vec![
            Interface {
                name: port,
                mac: port_mac.map_or(String::new(), |m| m.to_string()),
                mtu: None,
                sandbox: None,
            },
            Interface {
                name: inv.ifname.clone(),
                mac: ep.mac.to_string(),
                mtu: Some(made.mtu),
                sandbox: Some(inv.netns.clone()),
            },
        ],
        ips: std::iter::once(IpConfig {
            version: conf.cni_version.starts_with("0.").then_some("4"),
            address: format!("{}/{}", ep.ip, net.subnet.prefix()),
            gateway: made.gateway.map(|gw| gw.to_string()),
            interface: 1,
        })
        // A dual-stack network's address, its gateway the IPv6 one (none when internal).
        .chain(made.ipv6.map(|(addr, prefix)| IpConfig {
            version: conf.cni_version.starts_with("0.").then_some("6"),
            address: format!("{addr}/{prefix}"),
            gateway: made.gateway6.map(|gw| gw.to_string()),
            interface: 1,
        }))
        .collect(),
        // The way out through this host (egress.rs), over IPv4 and on a dual-stack network over
        // IPv6, unless the network is internal.
        routes: made
            .gateway
            .map(|gw| Route {
                dst: "0.0.0.0/0".into(),
                gw: Some(gw.to_string()),
            })
            .into_iter()
            .chain(made.gateway6.map(|gw| Route {
                dst: "::/0".into(),
                gw: Some(gw.to_string()),
            }))
            .collect(),
        // The network's resolver on this host (docs/names.md), internal networks included.
        dns: Dns {
            nameservers: made.resolver.iter().map(|r| r.to_string()).collect(),
            search: vec![net.name.clone()],
        },
    };
    let result = match &conf.prev_result {
        Some(prev) => protocol::chain(prev, ours)
            .map_err(|e| Error::new(Code::Decoding, format!("prevResult: {e}")))?,
        None => serde_json::to_value(&ours).expect("serializable"),
    };
    json(&result)
}

async fn del(inv: &Invocation, conf: &NetConf) -> Result<(), Error> {
    let network = network_of(conf)?;
    inv.require("CNI_CONTAINERID", &inv.container_id)?;
    inv.require("CNI_IFNAME", &inv.ifname)?;
    // CNI_NETNS may be empty (containerd) or gone: deleting the host side takes the pair.
    let name = endpoint_name(&conf.name, &inv.container_id, &inv.ifname);
    let ctx = match node_ctx(conf, false).await {
        Ok(ctx) => ctx,
        // etcd unreachable: the interface goes now, the record with the runtime's retry.
        Err(e) if e.code() == Code::TryAgainLater as u32 => {
            let e = commands::endpoint_release_local(network, &name, anyhow::anyhow!(e.msg)).await;
            return Err(Error::new(Code::TryAgainLater, format!("{e:#}")));
        }
        Err(e) => return Err(e),
    };
    commands::endpoint_release(&ctx, network, &name)
        .await
        .map_err(|e| Error::new(Code::TryAgainLater, format!("{e:#}")))?;
    Ok(())
}

async fn check(inv: &Invocation, conf: &NetConf) -> Result<(), Error> {
    let network = network_of(conf)?;
    inv.require("CNI_CONTAINERID", &inv.container_id)?;
    inv.require("CNI_IFNAME", &inv.ifname)?;
    inv.require("CNI_NETNS", &inv.netns)?;
    let ctx = node_ctx(conf, true).await?;
    let name = endpoint_name(&conf.name, &inv.container_id, &inv.ifname);
    let mismatch = |what: String| Error::new(Code::Mismatch, what);
    let ep = ctx
        .store
        .endpoint_named(&ctx.node, &name)
        .await
        .map_err(|e| Error::new(Code::TryAgainLater, format!("{e:#}")))?
        .filter(|ep| ep.network == network)
        .ok_or_else(|| {
            Error::new(
                Code::UnknownContainer,
                format!(
                    "container {} ({}) has no attachment to network {network} on node {}",
                    inv.container_id, inv.ifname, ctx.node
                ),
            )
        })?;
    if let Some(prev) = &conf.prev_result
        && !protocol::has_address(prev, ep.ip)
    {
        return Err(mismatch(format!(
            "prevResult does not list {}, the address of {} in etcd",
            ep.ip, inv.ifname
        )));
    }
    if !commands::wait_served(&ctx, &ep, true)
        .await
        .map_err(failed)?
    {
        return Err(mismatch(format!(
            "node {}'s maps do not serve {} ({}), or its port has no program attached",
            ctx.node, ep.ip, name
        )));
    }
    let ns = Netns::open(&inv.netns).map_err(|e| mismatch(format!("{e:#}")))?;
    let inner = Netlink::in_netns(ns.file()).map_err(failed)?;
    let (mac, ip) = (
        inner.mac(&inv.ifname).await.map_err(failed)?,
        match inner.index(&inv.ifname).await.map_err(failed)? {
            Some(_) => inner.ipv4(&inv.ifname).await.map_err(failed)?,
            None => None,
        },
    );
    if mac != Some(ep.mac) || ip != Some(ep.ip) {
        return Err(mismatch(format!(
            "{} in {} has MAC {} and address {}, expected {} and {}",
            inv.ifname,
            inv.netns,
            mac.map_or("none".to_string(), |m| m.to_string()),
            ip.map_or("none".to_string(), |i| i.to_string()),
            ep.mac,
            ep.ip
        )));
    }
    Ok(())
}

/// Ready for ADDs: the node's agent runs (it attaches and serves new endpoints).
fn status(conf: &NetConf) -> Result<(), Error> {
    status::running(&run_dir(conf), &node_of(conf))
        .map(drop)
        .map_err(|e| Error::new(Code::NotAvailable, format!("{e:#}")))
}

/// Removes this node's attachments made through this network configuration that the runtime
/// no longer has. Best effort: every stale one is tried, and the failures are reported
/// together.
async fn gc(conf: &NetConf) -> Result<(), Error> {
    let network = network_of(conf)?;
    if conf.cni_version.starts_with("0.") || conf.cni_version.starts_with("1.0") {
        return Err(Error::new(
            Code::IncompatibleVersion,
            format!("GC needs cniVersion 1.1.0, not {:?}", conf.cni_version),
        ));
    }
    let Some(valid) = &conf.valid_attachments else {
        return Err(Error::new(
            Code::InvalidConfig,
            "GC without cni.dev/valid-attachments: refusing to collect every attachment",
        ));
    };
    let valid: std::collections::BTreeSet<String> = valid
        .iter()
        .map(|a| endpoint_name(&conf.name, &a.container_id, &a.ifname))
        .collect();
    let ctx = node_ctx(conf, false).await?;
    let mine = owner(&conf.name);
    let stale: Vec<String> = ctx
        .store
        .endpoints(Some(network))
        .await
        .map_err(|e| Error::new(Code::TryAgainLater, format!("{e:#}")))?
        .into_iter()
        .filter(|ep| {
            ep.node() == Some(ctx.node.as_str())
                && ep.owner.as_deref() == Some(mine.as_str())
                && !valid.contains(&ep.name)
        })
        .map(|ep| ep.name)
        .collect();
    let mut errors = Vec::new();
    for name in stale {
        log::info!("GC: removing attachment {name} of network {network}");
        if let Err(e) = commands::endpoint_release(&ctx, network, &name).await {
            errors.push(format!("{name}: {e:#}"));
        }
    }
    if !errors.is_empty() {
        return Err(Error::new(Code::TryAgainLater, errors.join("; ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_differ_per_interface_and_namespace_and_are_stable() {
        let a = endpoint_name("blue", "default-c1", "eth0");
        assert!(a.starts_with(NAME_PREFIX) && a.len() == 20, "{a}");
        schema::check_name("endpoint", &a).unwrap();
        assert_eq!(a, endpoint_name("blue", "default-c1", "eth0"));
        assert_ne!(a, endpoint_name("blue", "default-c1", "eth1"));
        assert_ne!(a, endpoint_name("blue", "k8s.io-c1", "eth0"));
        assert_ne!(a, endpoint_name("green", "default-c1", "eth0"));
    }
}

/// The environment and the configuration a runtime passes are outside input: refused in one
/// line with the code the spec gives, never a panic, before anything touches etcd or the host.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::shared::fuzzing::{CASES, input, one_line, plausible_string};

    /// Commands that go no further than parsing: anything but ADD, DEL, CHECK, STATUS, GC
    /// (which read the agent's status and speak to etcd).
    fn harmless_command() -> impl Strategy<Value = String> {
        plausible_string().prop_filter("a command that acts", |c| {
            !["ADD", "DEL", "CHECK", "STATUS", "GC"].contains(&c.as_str())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn invocations(
            command in prop_oneof![Just("VERSION".to_string()), harmless_command()],
            stdin in input(protocol::fuzz::A_CONF, protocol::fuzz::CONF),
        ) {
            let inv = Invocation { command, ..Invocation::default() };
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            match rt.block_on(handle(&inv, &stdin)) {
                Ok(out) => prop_assert_eq!(inv.command.as_str(), "VERSION", "{:?}", out),
                Err(e) => one_line(&e.msg)?,
            }
        }

        #[test]
        fn configurations_name_a_network(stdin in input(protocol::fuzz::A_CONF, protocol::fuzz::CONF)) {
            if let Ok(conf) = protocol::parse_conf(&stdin) {
                match network_of(&conf) {
                    Ok(network) => schema::check_name("network", network).unwrap(),
                    Err(e) => {
                        prop_assert_eq!(e.code(), Code::InvalidConfig as u32);
                        one_line(&e.msg)?;
                    }
                }
            }
        }

        #[test]
        fn environments(
            // require() runs for the commands that act (dispatched above it).
            command in prop::sample::select(&["ADD", "DEL", "CHECK"][..]).prop_map(String::from),
            what in prop::sample::select(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"][..]),
            value in plausible_string(),
            id in plausible_string(),
            ifname in plausible_string(),
        ) {
            let inv = Invocation { command, ..Invocation::default() };
            if let Err(e) = inv.require(what, &value) {
                one_line(&e.msg)?;
            }
            // Any container ID and interface name make an endpoint name etcd takes.
            schema::check_name("endpoint", &endpoint_name(what, &id, &ifname)).unwrap();
        }
    }
}
