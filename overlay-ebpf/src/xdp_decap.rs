//! Decapsulation at XDP on the underlay: the alternative to `from_underlay` (TC) that
//! `overlay-bench --xdp-decap` measures before anything depends on it. Only the fast path is
//! here: valid VXLAN from a VTEP of the VNI, on its port, for a local container, without an outer
//! ECN mark or UDP checksum, is stripped and redirected to the container's veth; everything else is XDP_PASS, so the TC program still
//! sees it, decides, and counts the reason. IPv4 underlays only: an IPv6 one's packets pass to
//! the TC program.
use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_PASS},
    helpers::{bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, udp::UdpHdr};
use overlay_common::{
    Counter, MacKey, VtepKey, deliver, vtep,
    wire::{self, ENCAP_OVERHEAD, OUTER_HEADERS_LEN, VxlanHdr},
};

use crate::{
    maps::{ENDPOINTS, VTEPS, VXLAN_PORTS},
    stats::count,
};

const OFF_IP: usize = EthHdr::LEN;
const OFF_UDP: usize = OFF_IP + Ipv4Hdr::LEN;
const OFF_VXLAN: usize = OFF_UDP + UdpHdr::LEN;

pub fn handle(ctx: &XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + OUTER_HEADERS_LEN + EthHdr::LEN > end {
        return XDP_PASS;
    }
    let (eth, ip, udp, vxlan, inner) = unsafe {
        (
            &*(data as *const EthHdr),
            &*((data + OFF_IP) as *const Ipv4Hdr),
            &*((data + OFF_UDP) as *const UdpHdr),
            &*((data + OFF_VXLAN) as *const VxlanHdr),
            &*((data + OUTER_HEADERS_LEN) as *const EthHdr),
        )
    };
    if u16::from_be(eth.ether_type) != wire::ETH_P_IP
        || ip.vihl != 0x45
        || ip.proto != wire::IPPROTO_UDP
        || u16::from_be_bytes(ip.frags) & 0x3fff != 0
        || !vxlan.is_valid()
        // An outer ECN mark to pass on, or a checksum to verify: the TC program's work.
        || ip.tos & 3 != 0
        || udp.check != [0, 0]
    {
        return XDP_PASS;
    }
    let dport = u16::from_be_bytes(udp.dst);
    match VXLAN_PORTS.get(u32::from(dport)) {
        Some(n) if *n != 0 => {}
        _ => return XDP_PASS,
    }
    let vni = vxlan.vni();
    match unsafe {
        VTEPS.get(VtepKey {
            vni,
            ip: vtep::from_v4(ip.src_addr),
        })
    } {
        Some(&port) if port == u32::from(dport) => {}
        _ => return XDP_PASS,
    }
    let inner_type = u16::from_be(inner.ether_type);
    let Some(to) = (unsafe { ENDPOINTS.get(MacKey::new(vni, inner.dst_addr)) }) else {
        return XDP_PASS;
    };
    if to.deliver != deliver::PEER
        || (inner_type != wire::ETH_P_IP && inner_type != wire::ETH_P_IPV6)
    {
        return XDP_PASS;
    }
    let ifindex = to.ifindex;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, ENCAP_OVERHEAD as i32) } != 0 {
        return XDP_ABORTED;
    }
    count(Counter::Decap);
    // Out of the container's host-side veth, into the container (its eth0 needs NAPI: GRO on).
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}
