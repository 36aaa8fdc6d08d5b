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

use protocol::{AddResult, Code, Error, Interface, IpConfig, NetConf, VersionResult};

use crate::{
    agent,
    commands::{self, Attach, Ctx},
    dataplane::{PinDir, pins},
    plumbing::{Netlink, open_netns},
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

/// Prefix of the endpoint names this plugin makes: GC removes only those.
pub const NAME_PREFIX: &str = "cni-";

/// The endpoint name of a container's attachment: a stable hash of the container ID and the
/// interface name, as runtimes' IDs are too long for names and may share a prefix (containerd
/// prefixes its namespace).
pub fn endpoint_name(container_id: &str, ifname: &str) -> String {
    format!(
        "{NAME_PREFIX}{:016x}",
        commands::stable_hash(&format!("{container_id}/{ifname}"))
    )
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
                e.cni_version = protocol::parse_conf(&stdin)
                    .ok()
                    .map(|c| c.cni_version)
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "1.1.0".to_string());
            }
            println!("{}", serde_json::to_string(&e).expect("serializable"));
            ExitCode::FAILURE
        }
    }
}

/// One CNI call: what to print on success (nothing for DEL, STATUS, GC).
pub async fn handle(inv: &Invocation, stdin: &[u8]) -> Result<Option<String>, Error> {
    if inv.command == "VERSION" {
        let version = protocol::parse_conf(stdin)
            .ok()
            .map(|c| c.cni_version)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "1.1.0".to_string());
        return json(&VersionResult {
            cni_version: version,
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
                "cniVersion {} is not supported (supported: {})",
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
            format!("unknown CNI_COMMAND {other}"),
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
        .unwrap_or_else(|| PathBuf::from(agent::DEFAULT_RUN_DIR))
}

fn node_of(conf: &NetConf) -> String {
    conf.node.clone().unwrap_or_else(agent::default_node)
}

/// Acts as the CLI on this node would: etcd, prefix and pins from the agent's status. ADD and
/// CHECK need the agent running (it is what serves an attachment); DEL and GC only need etcd,
/// so that a runtime can clean up while the agent is down.
async fn node_ctx(conf: &NetConf, agent_must_run: bool) -> Result<Ctx, Error> {
    let node = node_of(conf);
    let later = |e: anyhow::Error| Error::new(Code::TryAgainLater, format!("{e:#}"));
    let status = if agent_must_run {
        Some(agent::running(&run_dir(conf), &node).map_err(later)?)
    } else {
        agent::last_status(&run_dir(conf), &node).ok()
    };
    let etcd = conf.etcd.clone().unwrap_or_else(|| match &status {
        Some(s) if !s.etcd.is_empty() => s.etcd.split(',').map(str::to_string).collect(),
        _ => vec![store::DEFAULT_ENDPOINT.to_string()],
    });
    let prefix = status
        .as_ref()
        .map(|s| s.prefix.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| schema::DEFAULT_PREFIX.to_string());
    let pins = match status.as_ref().map(|s| s.pins.clone()) {
        Some(dir) if !dir.as_os_str().is_empty() => PinDir::at(dir),
        _ => PinDir::new(pins::DEFAULT_ROOT, &node).map_err(later)?,
    };
    let store = Store::connect(&etcd, &prefix).await.map_err(later)?;
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
    open_netns(&inv.netns).map_err(|e| Error::new(Code::InvalidEnvironment, format!("{e:#}")))?;
    let ctx = node_ctx(conf, true).await?;
    let known = ctx
        .store
        .networks()
        .await
        .map_err(|e| Error::new(Code::TryAgainLater, format!("{e:#}")))?;
    if !known.iter().any(|n| n.name == network) {
        return Err(Error::new(
            Code::InvalidConfig,
            format!(
                "overlay network {network} does not exist (`overlay-agent network ls` lists them)"
            ),
        ));
    }
    let req = Attach {
        name: endpoint_name(&inv.container_id, &inv.ifname),
        network: network.to_string(),
        ip: None,
        ifname: Some(inv.ifname.clone()),
        mtu: conf.mtu,
    };
    let ep = commands::endpoint_add(&ctx, &req, &inv.netns)
        .await
        .map_err(failed)?;
    if !commands::wait_served(&ctx, &ep, true)
        .await
        .unwrap_or(false)
    {
        log::warn!(
            "node {}'s maps do not show {} yet; is `overlay-agent run` running for it?",
            ctx.node,
            ep.ip
        );
    }
    let port = commands::port_name(network, &req.name);
    let host = Netlink::new().map_err(failed)?;
    let port_mac = host
        .mac(&port)
        .await
        .map_err(failed)?
        .map_or(String::new(), |m| m.to_string());
    let net = ctx.store.network(network).await.map_err(failed)?;
    let mtu = match conf.mtu {
        Some(mtu) => mtu,
        None => host.mtu(&port).await.map_err(failed)?.unwrap_or(0),
    };
    let old_format = conf.cni_version.starts_with("0.");
    json(&AddResult {
        cni_version: if conf.cni_version.is_empty() {
            "1.0.0".to_string()
        } else {
            conf.cni_version.clone()
        },
        interfaces: vec![
            Interface {
                name: port,
                mac: port_mac,
                mtu: None,
                sandbox: None,
            },
            Interface {
                name: inv.ifname.clone(),
                mac: ep.mac.to_string(),
                mtu: Some(mtu),
                sandbox: Some(inv.netns.clone()),
            },
        ],
        ips: vec![IpConfig {
            version: old_format.then_some("4"),
            address: format!("{}/{}", ep.ip, net.subnet.prefix()),
            gateway: None,
            interface: 1,
        }],
        routes: Vec::new(),
        dns: Default::default(),
    })
}

async fn del(inv: &Invocation, conf: &NetConf) -> Result<(), Error> {
    let network = network_of(conf)?;
    inv.require("CNI_CONTAINERID", &inv.container_id)?;
    inv.require("CNI_IFNAME", &inv.ifname)?;
    // CNI_NETNS may be empty (containerd) or gone: deleting the host side takes the pair.
    let ctx = node_ctx(conf, false).await?;
    commands::endpoint_release(
        &ctx,
        network,
        &endpoint_name(&inv.container_id, &inv.ifname),
    )
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
    let name = endpoint_name(&inv.container_id, &inv.ifname);
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
    if !commands::wait_served(&ctx, &ep, true)
        .await
        .map_err(failed)?
    {
        return Err(mismatch(format!(
            "node {}'s maps do not serve {} ({}), or its port has no program attached",
            ctx.node, ep.ip, name
        )));
    }
    let ns = open_netns(&inv.netns).map_err(|e| mismatch(format!("{e:#}")))?;
    let inner = Netlink::in_netns(&ns).map_err(failed)?;
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
    agent::running(&run_dir(conf), &node_of(conf))
        .map(drop)
        .map_err(|e| Error::new(Code::NotAvailable, format!("{e:#}")))
}

/// Removes this node's attachments to the network that the runtime no longer has.
async fn gc(conf: &NetConf) -> Result<(), Error> {
    let network = network_of(conf)?;
    let valid: std::collections::BTreeSet<String> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| endpoint_name(&a.container_id, &a.ifname))
        .collect();
    let ctx = node_ctx(conf, false).await?;
    let later = |e: anyhow::Error| Error::new(Code::TryAgainLater, format!("{e:#}"));
    let stale: Vec<String> = ctx
        .store
        .endpoints(Some(network))
        .await
        .map_err(later)?
        .into_iter()
        .filter(|ep| {
            ep.node() == Some(ctx.node.as_str())
                && ep.name.starts_with(NAME_PREFIX)
                && !valid.contains(&ep.name)
        })
        .map(|ep| ep.name)
        .collect();
    for name in stale {
        log::info!("GC: removing attachment {name} of network {network}");
        commands::endpoint_release(&ctx, network, &name)
            .await
            .map_err(later)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_differ_per_interface_and_namespace_and_are_stable() {
        let a = endpoint_name("default-c1", "eth0");
        assert!(a.starts_with(NAME_PREFIX) && a.len() == 20, "{a}");
        schema::check_name("endpoint", &a).unwrap();
        assert_eq!(a, endpoint_name("default-c1", "eth0"));
        assert_ne!(a, endpoint_name("default-c1", "eth1"));
        assert_ne!(a, endpoint_name("k8s.io-c1", "eth0"));
    }
}
