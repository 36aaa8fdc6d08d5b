//! The Docker plumbing over rtnetlink: per-network bridges, veth pairs, an end moved into a
//! container's namespace as `eth0`, MACs, MTUs and addresses. A netlink socket acts in the
//! namespace it was opened in, so [`Netlink::in_netns`] opens one from a thread that entered
//! the target namespace first.
use std::{
    collections::BTreeMap,
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
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

    /// Every IPv4 address of `name`.
    pub async fn ipv4_all(&self, name: &str) -> Result<Vec<Ipv4Addr>> {
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
                if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = attr {
                    out.push(*ip);
                }
            }
        }
        Ok(out)
    }

    /// `addr/prefix` on `name`, unless it is there already.
    pub async fn ensure_address(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        if self.ipv4_all(name).await?.contains(&addr) {
            return Ok(());
        }
        let index = self.require(name).await?;
        self.handle
            .address()
            .add(index, addr.into(), prefix)
            .execute()
            .await
            .with_context(|| format!("adding {addr}/{prefix} to {name}"))
    }

    /// Whether this socket's namespace has an IPv4 default route.
    pub async fn has_default_route(&self) -> Result<bool> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes = self.handle.route().get(filter).execute();
        while let Some(msg) = routes.try_next().await.context("listing routes")? {
            if msg.header.destination_prefix_length == 0
                && msg.header.table == 254
                && msg
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Gateway(_)))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `default via gateway`, in this socket's namespace.
    pub async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .with_context(|| format!("adding the default route via {gateway}"))
    }

    /// The /32 routes of protocol `protocol` in the main table: (address, output ifindex).
    pub async fn host_routes(&self, protocol: u8) -> Result<Vec<(Ipv4Addr, u32)>> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes = self.handle.route().get(filter).execute();
        let mut out = Vec::new();
        while let Some(msg) = routes.try_next().await.context("listing routes")? {
            if u8::from(msg.header.protocol) != protocol
                || msg.header.destination_prefix_length != 32
            {
                continue;
            }
            let (mut dst, mut oif) = (None, None);
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if let (Some(dst), Some(oif)) = (dst, oif) {
                out.push((dst, oif));
            }
        }
        Ok(out)
    }

    fn host_route(addr: Ipv4Addr, ifindex: u32, protocol: u8) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(addr, 32)
            .output_interface(ifindex)
            .protocol(RouteProtocol::from(protocol))
            .scope(RouteScope::Link)
            .build()
    }

    /// `addr/32 dev <ifindex> proto <protocol> scope link`.
    pub async fn add_host_route(&self, addr: Ipv4Addr, ifindex: u32, protocol: u8) -> Result<()> {
        self.handle
            .route()
            .add(Self::host_route(addr, ifindex, protocol))
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding the route to {addr}/32"))
    }

    pub async fn del_host_route(&self, addr: Ipv4Addr, ifindex: u32, protocol: u8) -> Result<()> {
        self.handle
            .route()
            .del(Self::host_route(addr, ifindex, protocol))
            .execute()
            .await
            .with_context(|| format!("removing the route to {addr}/32"))
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
    let conf = format!("/proc/sys/net/ipv6/conf/{dev}");
    let read = |key: &str| {
        std::fs::read_to_string(format!("{conf}/{key}"))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("reading {conf}/{key}"))
    };
    let write = |key: &str, value: &str| {
        std::fs::write(format!("{conf}/{key}"), value)
            .with_context(|| format!("writing {conf}/{key}"))
    };
    if read("forwarding")? == "1" {
        return Ok(());
    }
    if read("accept_ra")? == "1" {
        write("accept_ra", "2")?;
        log::info!(
            "{dev}: accept_ra 1 -> 2, so router advertisements still count once it forwards"
        );
    }
    write("forwarding", "1")?;
    log::info!("{dev}: IPv6 forwarding on, for the FIB lookups of an IPv6 underlay");
    Ok(())
}
