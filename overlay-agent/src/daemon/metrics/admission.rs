//! Who may talk to the metrics server: the host and its network, never the overlay.
//!
//! A container's default route is its host's gateway, so a server on a wildcard address (the
//! gateway's included) or on the underlay's address (routed through the gateway) answered every
//! container: the node's counters and maps for the reading, and a map walk per request for the
//! asking (issue 25). So a connection is closed unanswered if it arrived on one of our
//! interfaces (a bridge, a container port, a host leg, a GRO helper) or comes from an address
//! of any overlay network, and so is one whose arrival interface cannot be read: it is checked
//! before a byte of it is read.
use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, RawFd},
    sync::{Arc, Mutex},
};

use tokio::net::{TcpListener, TcpStream};

/// The subnets of every network in the cluster (not only those this node serves: a
/// container of any of them is one).
pub use crate::model::names::OverlaySubnets;

/// Why a connection from `peer` that arrived on the interface `arrived_on` (or whose interface
/// could not be read) is refused; None: it is served. Pure.
pub fn refusal(
    peer: IpAddr,
    arrived_on: Result<String, String>,
    overlay: &OverlaySubnets,
) -> Option<String> {
    let peer = peer.to_canonical();
    match arrived_on {
        Err(e) => Some(format!(
            "from {peer}: its arrival interface is unknown ({e})"
        )),
        Ok(dev) if crate::shared::ifnames::is_our_interface(&dev) => {
            Some(format!("from {peer}: it arrived on the overlay's {dev}"))
        }
        Ok(_) if overlay.contains(peer) => {
            Some(format!("from {peer}: an address of an overlay network"))
        }
        Ok(_) => None,
    }
}

/// The metrics listener, which hands axum only the connections [`refusal`] lets through.
pub struct Guarded {
    pub listener: TcpListener,
    pub overlay: Arc<Mutex<OverlaySubnets>>,
}

impl axum::serve::Listener for Guarded {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let (stream, peer) = axum::serve::Listener::accept(&mut self.listener).await;
            let arrived_on = arrival_interface(stream.as_raw_fd(), peer.ip());
            let overlay = self.overlay.lock().expect("overlay subnets lock").clone();
            match refusal(peer.ip(), arrived_on, &overlay) {
                // Debug only: a container may connect as often as it likes.
                Some(why) => log::debug!("metrics: refused a connection {why}"),
                None => return (stream, peer),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The name of the interface the connection on `fd` from `peer` arrived on.
fn arrival_interface(fd: RawFd, peer: IpAddr) -> Result<String, String> {
    let ifindex = arrival_ifindex(fd, peer).map_err(|e| e.to_string())?;
    if ifindex == 0 {
        return Err("the kernel gave none".into());
    }
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    if unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null() {
        return Err(format!("ifindex {ifindex}: {}", io::Error::last_os_error()));
    }
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// The ifindex the connection's SYN came in by. TCP keeps it in the accepted socket
/// (`mc_index`, `mcast_oif`, set from the SYN in `tcp_v4_syn_recv_sock` and
/// `tcp_v6_syn_recv_sock`), and hands it out as the IP_PKTINFO / IPV6_PKTINFO of the
/// `IP_PKTOPTIONS` / `IPV6_2292PKTOPTIONS` getsockopt once that option is on. IPv4 peers of an
/// IPv6 socket (`::ffff:a.b.c.d`) are IPv4 connections to the kernel.
fn arrival_ifindex(fd: RawFd, peer: IpAddr) -> io::Result<u32> {
    let v4 = peer.to_canonical().is_ipv4();
    let (level, on, get, want) = if v4 {
        (
            libc::SOL_IP,
            libc::IP_PKTINFO,
            libc::IP_PKTOPTIONS,
            libc::IP_PKTINFO,
        )
    } else {
        (
            libc::SOL_IPV6,
            libc::IPV6_RECVPKTINFO,
            libc::IPV6_2292PKTOPTIONS,
            libc::IPV6_PKTINFO,
        )
    };
    let one: libc::c_int = 1;
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            on,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // Aligned for cmsghdr; room for a few control messages.
    let mut buf = [0u64; 32];
    let mut len = size_of_val(&buf) as libc::socklen_t;
    let r = unsafe { libc::getsockopt(fd, level, get, buf.as_mut_ptr().cast(), &mut len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_control = buf.as_mut_ptr().cast();
    // size_t in glibc, socklen_t in musl (the static build of the Docker plugin).
    msg.msg_controllen = len as _;
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        let c = unsafe { &*cmsg };
        if c.cmsg_level == level && c.cmsg_type == want {
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            return Ok(if v4 {
                let info: libc::in_pktinfo = unsafe { std::ptr::read_unaligned(data.cast()) };
                info.ipi_ifindex as u32
            } else {
                let info: libc::in6_pktinfo = unsafe { std::ptr::read_unaligned(data.cast()) };
                info.ipi6_ifindex
            });
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::ipam::Cidr;

    fn overlay() -> OverlaySubnets {
        OverlaySubnets {
            v4: vec!["10.10.0.0/16".parse::<Cidr>().unwrap()],
            v6: vec!["fd00:10::/64".parse().unwrap()],
        }
    }

    #[test]
    fn the_overlay_is_refused_and_the_host_served() {
        let o = overlay();
        let ok = |s: &str| Ok::<_, String>(s.to_string());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(refusal(ip("10.0.0.254"), ok("eth1"), &o), None);
        assert_eq!(refusal(ip("127.0.0.1"), ok("lo"), &o), None);
        assert_eq!(refusal(ip("fe80::1"), ok("eth1"), &o), None);
        // A container's address, however it came.
        for peer in ["10.10.0.2", "::ffff:10.10.0.2", "fd00:10::a0a:2"] {
            let why = refusal(ip(peer), ok("eth1"), &o).unwrap();
            assert!(why.contains("an address of an overlay network"), "{why}");
        }
        // Anything arriving on our interfaces: a link-local source is in no subnet.
        for dev in ["ovbr42", "ove0123abcd", "ovh42", "ovgro4789"] {
            let why = refusal(ip("fe80::42:aff:fe0a:2"), ok(dev), &o).unwrap();
            assert!(
                why.contains(&format!("arrived on the overlay's {dev}")),
                "{why}"
            );
        }
        // A user's interface that merely looks like ours is not.
        assert_eq!(refusal(ip("192.168.1.9"), ok("ovbrx"), &o), None);
        let why = refusal(ip("192.168.1.9"), Err("EINVAL".into()), &o).unwrap();
        assert!(why.contains("unknown (EINVAL)"), "{why}");
    }

    /// The kernel really names the interface a connection came in by: lo for loopback, over
    /// IPv4, IPv6, and IPv4 on an IPv6 socket.
    #[test]
    fn the_arrival_interface_is_read_from_the_accepted_socket() {
        for (listen, connect) in [
            ("127.0.0.1:0", "127.0.0.1"),
            ("[::1]:0", "::1"),
            ("[::]:0", "127.0.0.1"),
        ] {
            let listener = std::net::TcpListener::bind(listen).unwrap();
            let port = listener.local_addr().unwrap().port();
            let connect: IpAddr = connect.parse().unwrap();
            let _client = std::net::TcpStream::connect((connect, port)).unwrap();
            let (accepted, peer) = listener.accept().unwrap();
            assert_eq!(
                arrival_interface(accepted.as_raw_fd(), peer.ip()),
                Ok("lo".to_string()),
                "{listen} from {peer}"
            );
        }
    }
}
