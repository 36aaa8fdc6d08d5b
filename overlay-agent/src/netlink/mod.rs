//! The Docker plumbing over rtnetlink: per-network bridges, veth pairs, an end moved into a
//! container's namespace as `eth0`, MACs, MTUs and addresses. A netlink socket acts in the
//! namespace it was opened in, so [`Netlink::in_netns`] opens one from a thread that entered
//! the target namespace first.
use std::{
    collections::BTreeMap,
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
    packet_route::{
        address::{AddressAttribute, AddressFlags},
        link::{InfoVxlan, LinkAttribute, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope},
    },
};

use crate::shared::net::Mac;

mod ifindex;
mod netns;

pub use self::{
    ifindex::{iface_name, ifindex},
    netns::{Netns, NetnsSockets, cookie as netns_cookie, netns_path, open_netns},
};

pub struct Netlink {
    handle: Handle,
}

/// One interface as netlink describes it, for the code that decides what to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    /// What `ip link` shows as its alias: a port says which endpoint it is
    /// (`ifnames::port_alias`).
    pub alias: Option<String>,
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

impl Netlink {
    /// A socket in the calling thread's namespace.
    pub fn new() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// A socket in the namespace `ns` refers to.
    pub fn in_netns(ns: &File) -> Result<Self> {
        let fd = ns.try_clone()?;
        let runtime = tokio::runtime::Handle::current();
        let (conn, handle) = std::thread::spawn(move || -> Result<_> {
            let _guard = runtime.enter();
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!(
                    "entering the namespace: {}",
                    std::io::Error::last_os_error()
                );
            }
            let (conn, handle, _) = rtnetlink::new_connection()?;
            Ok((conn, handle))
        })
        .join()
        .map_err(|_| anyhow!("the namespace thread panicked"))??;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    async fn link(&self, name: &str) -> Result<Option<LinkMessage>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(anyhow!("looking up interface {name}: {e}")),
        }
    }

    pub async fn index(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name).await?.map(|l| l.header.index))
    }

    async fn require(&self, name: &str) -> Result<u32> {
        self.index(name)
            .await?
            .ok_or_else(|| anyhow!("interface {name} does not exist"))
    }

    pub async fn mtu(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name).await?.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
        }))
    }

    pub async fn mac(&self, name: &str) -> Result<Option<Mac>> {
        Ok(self.link(name).await?.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Address(m) => Some(Mac(m.as_slice().try_into().ok()?)),
                _ => None,
            })
        }))
    }

    /// The first IPv4 address of `name`.
    pub async fn ipv4(&self, name: &str) -> Result<Option<Ipv4Addr>> {
        Ok(self.ipv4_all(name).await?.into_iter().next())
    }

    /// The bridge, created (up, with `mtu`) if missing; its ifindex.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<u32> {
        if let Some(index) = self.index(name).await? {
            return Ok(index);
        }
        match self
            .handle
            .link()
            .add(LinkBridge::new(name).mtu(mtu).build())
            .execute()
            .await
        {
            Ok(()) => {}
            // Another endpoint add made it at the same moment.
            Err(e) if is_errno(&e, libc::EEXIST) => {}
            Err(e) => bail!("creating bridge {name}: {e}"),
        }
        self.require(name).await
    }

    /// An idle collect_md ("external") vxlan device on UDP `port`, left down; its ifindex.
    /// Kept as it is if `name` exists. Its socket, open while it is up, is what makes the
    /// kernel merge our VXLAN packets (GRO); learning is off so it never changes state itself.
    pub async fn ensure_vxlan_external(&self, name: &str, port: u16) -> Result<u32> {
        if let Some(index) = self.index(name).await? {
            return Ok(index);
        }
        let device = LinkMessageBuilder::<LinkVxlan>::new(name)
            .append_info_data(InfoVxlan::CollectMetadata(true))
            .append_info_data(InfoVxlan::Port(port))
            .append_info_data(InfoVxlan::Learning(false))
            // Over an IPv6 underlay VXLAN comes with a zero UDP checksum (ours, and a legacy
            // host's with udp6zerocsumtx): the socket must not refuse what GRO merged.
            .append_info_data(InfoVxlan::UDPZeroCsumRX(true))
            .build();
        match self.handle.link().add(device).execute().await {
            Ok(()) => {}
            Err(e) if is_errno(&e, libc::EEXIST) && self.index(name).await?.is_none() => {
                // The name is free, so the port is taken: one external vxlan device per port
                // and namespace (someone else's already gives the port GRO).
                bail!(
                    "creating {name}: an external vxlan device already listens on UDP {port} ({e})"
                )
            }
            Err(e) if is_errno(&e, libc::EEXIST) => {}
            Err(e) => bail!("creating vxlan device {name} (external, UDP {port}): {e}"),
        }
        self.require(name).await
    }

    pub async fn add_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<()> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).mtu(mtu).build())
            .execute()
            .await
            .map_err(|e| {
                if is_errno(&e, libc::EEXIST) {
                    anyhow!("interface {name} or {peer} already exists")
                } else {
                    anyhow!("creating veth pair {name}/{peer}: {e}")
                }
            })
    }

    /// Sets `name`'s alias (IFLA_IFALIAS: `ip link` shows it).
    pub async fn set_alias(&self, name: &str, alias: &str) -> Result<()> {
        let index = self.require(name).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).alias(alias).build())
            .execute()
            .await
            .with_context(|| format!("setting the alias of {name}"))
    }

    /// `name`'s alias; None if it has none or does not exist.
    pub async fn alias(&self, name: &str) -> Result<Option<String>> {
        Ok(self.link(name).await?.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfAlias(alias) => Some(alias.clone()),
                _ => None,
            })
        }))
    }

    /// Puts `name` on `bridge` and brings it up.
    pub async fn attach_to_bridge(&self, name: &str, bridge: u32) -> Result<()> {
        let index = self.require(name).await?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("putting {name} on its bridge"))
    }

    pub async fn move_to_netns(&self, name: &str, ns: &File) -> Result<()> {
        let index = self.require(name).await?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .setns_by_fd(ns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("moving {name} into the container's namespace"))
    }

    /// Renames `name` to `new_name`, gives it `mac`, `mtu` and `addr/prefix`, and brings it up.
    pub async fn configure(
        &self,
        name: &str,
        new_name: &str,
        mac: Mac,
        mtu: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<()> {
        let index = self.require(name).await?;
        if new_name != name && self.index(new_name).await?.is_some() {
            bail!("the namespace already has an interface {new_name}");
        }
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .name(new_name.to_string())
                    .address(mac.0.to_vec())
                    .mtu(mtu)
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("setting name, MAC and MTU of {new_name}"))?;
        self.handle
            .address()
            .add(index, addr.into(), prefix)
            .execute()
            .await
            .with_context(|| format!("adding {addr}/{prefix} to {new_name}"))?;
        self.up(new_name).await
    }

    /// Adds a dual-stack network's IPv6 address to `name`, usable at once: the address is
    /// derived from an IPv4 address the cluster already made unique, so duplicate address
    /// detection has nothing to find (and would hold the address back for a second).
    pub async fn add_ipv6(&self, name: &str, addr: Ipv6Addr, prefix: u8) -> Result<()> {
        let index = self.require(name).await?;
        let mut req = self.handle.address().add(index, addr.into(), prefix);
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        req.execute()
            .await
            .with_context(|| format!("adding {addr}/{prefix} to {name}"))
    }

    /// Every address of `name`, of both families.
    pub async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>> {
        let index = self.require(name).await?;
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = addrs
            .try_next()
            .await
            .with_context(|| format!("listing addresses of {name}"))?
        {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(ip) = attr {
                    out.push(*ip);
                }
            }
        }
        Ok(out)
    }

    /// Every IPv4 address of `name`.
    pub async fn ipv4_all(&self, name: &str) -> Result<Vec<Ipv4Addr>> {
        Ok(self
            .addresses(name)
            .await?
            .into_iter()
            .filter_map(|a| match a {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// `addr/prefix` on `name`, unless it is there already; an IPv6 one usable at once, as
    /// [`Netlink::add_ipv6`] adds it.
    pub async fn ensure_address(&self, name: &str, addr: IpAddr, prefix: u8) -> Result<()> {
        if self.addresses(name).await?.contains(&addr) {
            return Ok(());
        }
        if let IpAddr::V6(v6) = addr {
            return self.add_ipv6(name, v6, prefix).await;
        }
        let index = self.require(name).await?;
        self.handle
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
            .with_context(|| format!("adding {addr}/{prefix} to {name}"))
    }

    /// The main table's routes of one family (`ipv6`), as netlink dumps them.
    async fn routes(&self, ipv6: bool) -> Result<Vec<RouteMessage>> {
        let filter = if ipv6 {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        self.handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .context("listing routes")
    }

    /// Whether this socket's namespace has a default route (IPv6 if `ipv6`) through a gateway.
    pub async fn has_default_route(&self, ipv6: bool) -> Result<bool> {
        Ok(self.routes(ipv6).await?.iter().any(|msg| {
            msg.header.destination_prefix_length == 0
                && msg.header.table == 254
                && msg
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Gateway(_)))
        }))
    }

    /// `default via gateway`, in this socket's namespace (of the gateway's family).
    pub async fn add_default_route(&self, gateway: IpAddr) -> Result<()> {
        let route = match gateway {
            IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build(),
            IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw).build(),
        };
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .with_context(|| format!("adding the default route via {gateway}"))
    }

    /// The host routes (/32 and /128) of protocol `protocol` in the main table, of both
    /// families: (address, output ifindex).
    pub async fn host_routes(&self, protocol: u8) -> Result<Vec<(IpAddr, u32)>> {
        let mut out = Vec::new();
        for ipv6 in [false, true] {
            let host_len = if ipv6 { 128 } else { 32 };
            for msg in self.routes(ipv6).await? {
                if u8::from(msg.header.protocol) != protocol
                    || msg.header.destination_prefix_length != host_len
                    || msg.header.table != 254
                {
                    continue;
                }
                let (mut dst, mut oif) = (None, None);
                for attr in &msg.attributes {
                    match attr {
                        RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                            dst = Some(IpAddr::V4(*ip))
                        }
                        RouteAttribute::Destination(RouteAddress::Inet6(ip)) => {
                            dst = Some(IpAddr::V6(*ip))
                        }
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                if let (Some(dst), Some(oif)) = (dst, oif) {
                    out.push((dst, oif));
                }
            }
        }
        Ok(out)
    }

    /// IPv4's scope is link (the address is on the wire); IPv6 routes have no scope of their
    /// own (the kernel keeps universe).
    fn host_route(addr: IpAddr, ifindex: u32, protocol: u8) -> RouteMessage {
        match addr {
            IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(a, 32)
                .output_interface(ifindex)
                .protocol(RouteProtocol::from(protocol))
                .scope(RouteScope::Link)
                .build(),
            IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(a, 128)
                .output_interface(ifindex)
                .protocol(RouteProtocol::from(protocol))
                .build(),
        }
    }

    /// `addr/32 dev <ifindex> proto <protocol> scope link`, or `addr/128 dev <ifindex> proto
    /// <protocol>`.
    pub async fn add_host_route(&self, addr: IpAddr, ifindex: u32, protocol: u8) -> Result<()> {
        self.handle
            .route()
            .add(Self::host_route(addr, ifindex, protocol))
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding the route to {addr}"))
    }

    pub async fn del_host_route(&self, addr: IpAddr, ifindex: u32, protocol: u8) -> Result<()> {
        self.handle
            .route()
            .del(Self::host_route(addr, ifindex, protocol))
            .execute()
            .await
            .with_context(|| format!("removing the route to {addr}"))
    }

    pub async fn up(&self, name: &str) -> Result<()> {
        let index = self.require(name).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .with_context(|| format!("bringing {name} up"))
    }

    /// Sets `name`'s MTU; Ok(false): there is no such interface.
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<bool> {
        let Some(index) = self.index(name).await? else {
            return Ok(false);
        };
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .with_context(|| format!("setting {name}'s MTU to {mtu}"))?;
        Ok(true)
    }

    /// The interface whose address is `mac`, if one is.
    pub async fn name_with_mac(&self, mac: Mac) -> Result<Option<String>> {
        for name in self.names().await? {
            if self.mac(&name).await? == Some(mac) {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// Deletes `name` (a veth takes its peer with it). Ok(false): it was not there.
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let Some(index) = self.index(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
            Err(e) => Err(anyhow!("deleting {name}: {e}")),
        }
    }

    async fn links(&self) -> Result<Vec<LinkMessage>> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .context("listing interfaces")
    }

    /// Names of every interface in the namespace.
    pub async fn names(&self) -> Result<Vec<String>> {
        Ok(self
            .links()
            .await?
            .iter()
            .filter_map(|l| {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                })
            })
            .collect())
    }

    /// Every interface by name, with its ifindex and alias (one dump).
    pub async fn links_by_name(&self) -> Result<BTreeMap<String, Link>> {
        Ok(self
            .links()
            .await?
            .iter()
            .filter_map(|l| {
                let (mut name, mut alias) = (None, None);
                for a in &l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => name = Some(n.clone()),
                        LinkAttribute::IfAlias(a) => alias = Some(a.clone()),
                        _ => {}
                    }
                }
                let link = Link {
                    ifindex: l.header.index,
                    alias,
                };
                Some((name?, link))
            })
            .collect())
    }

    /// How many interfaces have `bridge` as their controller.
    pub async fn bridge_ports(&self, bridge: u32) -> Result<usize> {
        Ok(self
            .links()
            .await?
            .iter()
            .filter(|l| {
                l.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::Controller(c) if *c == bridge))
            })
            .count())
    }
}

/// Makes the bridge `ifindex` an IGMP querier (`mcast_querier 1`), in this process's network
/// namespace: the containers on it answer its general queries with reports, which keeps their
/// snooped memberships alive.
pub fn set_igmp_querier(ifindex: u32) -> Result<()> {
    let name = iface_name(ifindex).ok_or_else(|| anyhow!("no interface with index {ifindex}"))?;
    let out = std::process::Command::new("ip")
        .args([
            "link",
            "set",
            "dev",
            &name,
            "type",
            "bridge",
            "mcast_querier",
            "1",
        ])
        .output()
        .context("running ip link set (iproute2)")?;
    if !out.status.success() {
        bail!(
            "making {name} an IGMP querier: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Turns IPv6 forwarding on for the underlay `dev` of an IPv6 VTEP: `bpf_fib_lookup`, which
/// gives encapsulation its next hop and path MTU, answers only for a device that forwards (the
/// kernel's IPv4 side is the same, and every Docker or Kubernetes node has it on). A forwarding
/// interface ignores router advertisements unless `accept_ra` is 2, so one that accepted them
/// (1) is moved to 2 first: the node keeps its addresses and default route from the network.
pub fn ipv6_forwarding(dev: &str) -> Result<()> {
    if forwarding_keeping_ra(dev)? {
        log::info!("{dev}: IPv6 forwarding on, for the FIB lookups of an IPv6 underlay");
    }
    Ok(())
}

/// Turns IPv6 routing on for the whole node (`net.ipv6.conf.all.forwarding`), for the IPv6 way
/// out of dual-stack networks (syncs/egress.rs). Linux routes an IPv6 packet only when `all`
/// forwards (an interface's own `forwarding` changes its host/router behaviour, not whether
/// packets arriving on it are routed; `force_forwarding`, 6.17 and later, would need the
/// interface the replies come in on, which is whichever the node's routes say). Setting `all`
/// sets every interface's `forwarding` too, so each interface that accepted router
/// advertisements (`accept_ra` 1), and `default` for those to come, is moved to 2 first, as
/// [`ipv6_forwarding`] does for one. Docker's `--ipv6` does the same switch.
pub fn ipv6_forwarding_all() -> Result<()> {
    let conf = std::path::Path::new("/proc/sys/net/ipv6/conf");
    if sysctl_read(&conf.join("all/forwarding"))? == "1" {
        return Ok(());
    }
    for entry in std::fs::read_dir(conf).with_context(|| format!("listing {}", conf.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "all" {
            keep_ra(&name)?;
        }
    }
    forwarding_keeping_ra("all")?;
    log::info!("IPv6 forwarding on (net.ipv6.conf.all.forwarding), for the IPv6 way out");
    Ok(())
}

fn sysctl_read(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|v| v.trim().to_string())
        .with_context(|| format!("reading {}", path.display()))
}

fn sysctl_write(path: &std::path::Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {}", path.display()))
}

/// `accept_ra` 1 -> 2 on `dev` (a conf directory's name), so router advertisements still count
/// once it forwards. An interface gone meanwhile is no error.
fn keep_ra(dev: &str) -> Result<()> {
    let path = std::path::Path::new("/proc/sys/net/ipv6/conf")
        .join(dev)
        .join("accept_ra");
    match sysctl_read(&path) {
        Ok(v) if v == "1" => {
            sysctl_write(&path, "2")?;
            log::info!(
                "{dev}: accept_ra 1 -> 2, so router advertisements still count once it forwards"
            );
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(_) if !path.exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// `forwarding` 1 on `dev` (a conf directory's name), `accept_ra` kept working first. True if
/// it changed.
fn forwarding_keeping_ra(dev: &str) -> Result<bool> {
    let path = std::path::Path::new("/proc/sys/net/ipv6/conf")
        .join(dev)
        .join("forwarding");
    if sysctl_read(&path)? == "1" {
        return Ok(false);
    }
    keep_ra(dev)?;
    sysctl_write(&path, "1")?;
    Ok(true)
}
