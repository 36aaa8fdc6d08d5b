//! ARP answered in place from the ARP map (RFC 826), so no broadcast leaves the host and no
//! miss needs an upcall.
use aya_ebpf::{helpers::bpf_redirect, programs::TcContext};
use network_types::{arp::ArpHdr, eth::EthHdr};
use overlay_common::{Counter, Endpoint, IpKey, MacKey, wire};

use crate::{
    flood,
    maps::{ARP, FDB},
    packet::{ifindex, linearize, ptr_at},
    stats::{Verdict, drop, pass, redirected},
};

const HTYPE_ETHERNET: u16 = 1;
/// IEEE 802 networks: Linux takes it on an Ethernet device as it takes type 1 (`arp_process`),
/// so it must be checked as type 1 is, or it would carry another container's address past us.
const HTYPE_IEEE802: u16 = 6;

pub fn answer(ctx: &TcContext, sender: &Endpoint) -> Verdict {
    if !linearize(ctx, EthHdr::LEN + ArpHdr::LEN) {
        return drop(Counter::DropTooShort);
    }
    let (Some(eth), Some(arp)) = (ptr_at::<EthHdr>(ctx, 0), ptr_at::<ArpHdr>(ctx, EthHdr::LEN))
    else {
        return drop(Counter::DropTooShort);
    };
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };
    let htype = u16::from_be_bytes(arp.htype);
    // Any other shape, Linux ignores (and so does every container's neighbour): left to the
    // bridge, which reaches only this host's ports.
    if (htype != HTYPE_ETHERNET && htype != HTYPE_IEEE802)
        || u16::from_be_bytes(arp.ptype) != wire::ETH_P_IP
        || arp.hlen != 6
        || arp.plen != 4
    {
        return pass(Counter::ContainerPass);
    }
    // A container may only speak for itself; 0.0.0.0 is an address probe (RFC 5227).
    if arp.sha != sender.mac {
        return drop(Counter::DropSpoofedMac);
    }
    if arp.spa != sender.ip && arp.spa != [0; 4] {
        return drop(Counter::DropSpoofedIp);
    }
    if u16::from_be_bytes(arp.oper) != wire::ARP_OP_REQUEST || arp.tpa == arp.spa {
        // A reply to a remote MAC answers a legacy host's request (ours never reach a
        // container: they are answered here); it goes back through the tunnel, or the legacy
        // host could not reach us without a static neighbour entry. Other replies and
        // gratuitous announcements stay on the local bridge.
        if u16::from_be_bytes(arp.oper) == wire::ARP_OP_REPLY
            && arp.tpa != arp.spa
            && let Some(fdb) = FDB.get_ptr(MacKey::new(sender.vni, eth.dst_addr))
        {
            return flood::to_remote(ctx, sender.vni, fdb);
        }
        return pass(Counter::ContainerPass);
    }
    let target_ip = arp.tpa;
    let Some(owner) = (unsafe {
        ARP.get(IpKey {
            vni: sender.vni,
            ip: target_ip,
        })
    }) else {
        // Nobody we know: ask the whole network, as a switch would.
        return flood::replicate(ctx, sender, Counter::ArpMiss, [0; 4]);
    };

    // Turn the request into the reply in place, and send it back out of the port it came in by.
    eth.dst_addr = eth.src_addr;
    eth.src_addr = owner.mac;
    // What the owner's kernel would answer from an Ethernet device, whatever the request said.
    arp.htype = HTYPE_ETHERNET.to_be_bytes();
    arp.oper = wire::ARP_OP_REPLY.to_be_bytes();
    arp.tha = arp.sha;
    arp.tpa = arp.spa;
    arp.sha = owner.mac;
    arp.spa = target_ip;
    let verdict = unsafe { bpf_redirect(ifindex(ctx), 0) };
    redirected(Counter::ArpReply, verdict)
}
