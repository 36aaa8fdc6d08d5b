//! IPv4 fragmentation of a container's packet that is too big for the tunnel and did not set
//! DF: what a router does with it (RFC 791 3.2), and what the kernel does on a routed overlay
//! such as flannel's, where `ip_forward` towards a vxlan device of smaller MTU fragments the
//! inner packet. (The kernel's *bridged* vxlan, Docker's layout, drops it at the bridge port's
//! MTU check instead.) Fragmenting the inner packet, not the outer one, keeps every wire packet
//! a whole VXLAN packet: the receiving VTEP decapsulates without reassembling, and the
//! receiving container reassembles as it would behind any router.
//!
//! A TC program cannot make packets, only copies of the one it holds. So the packet is cloned
//! once per further fragment back into the ingress of the port it came in by, with the
//! fragment's index and size in `skb->mark`; each copy comes through `from_container` again and
//! is cut down to its fragment here. The original becomes the first fragment. Every fragment is
//! then sent back through the port once more, unmarked, to be wrapped like any other packet.
//! Cutting: `adjust_room` at the network layer removes the payload in front of the fragment,
//! `bpf_skb_change_tail` what follows it. All of it is a program of its own, `fragment`, which
//! `from_container` tail-calls: its loops never weigh on the fast path's verification.
//!
//! Checksum offload: a container's UDP or TCP packet usually arrives CHECKSUM_PARTIAL, its
//! checksum field holding only the pseudo-header's sum for the device to complete over the
//! whole segment, which no fragment holds any more. The kernel resolves it before fragmenting
//! (`skb_checksum_help` in `ip_do_fragment`); so do we: the full checksum is computed here, and
//! the skb leaves the PARTIAL state (removing bytes behind `csum_start` does that) so nothing
//! completes it a second time.
use aya_ebpf::{
    bindings::{BPF_F_INGRESS, bpf_adj_room_mode::BPF_ADJ_ROOM_NET},
    helpers::{bpf_clone_redirect, bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use overlay_common::{Counter, jump, wire};

use crate::{
    checksum,
    maps::JUMP,
    packet::{ifindex, linearize, ptr_at},
    pmtu,
    stats::{Verdict, drop, redirected},
};

/// More fragments than a 64 KB packet needs at a 1450-byte tunnel MTU (46).
const MAX_FRAGS: u32 = 48;
const IPPROTO_SCTP: u8 = 132;
/// `adjust_room` moves at most 0xfff bytes per call; a multiple of 8 below that.
const SHRINK_STEP: u32 = 4088;
/// Bytes removed (and put back) behind the IPv4 header to move `csum_start` in front of the
/// data: more than the 34 of Ethernet and IPv4 in front of it (TC sees the Ethernet header).
const UNPARTIAL: usize = 40;
const L4: usize = EthHdr::LEN + Ipv4Hdr::LEN;

/// A fragment a copy is to become: its index and payload size.
#[derive(Clone, Copy)]
struct Piece {
    index: u32,
    size: u32,
}

/// The piece this packet is to become, if it is a copy [`handle`] made.
#[inline(always)]
fn piece_of(ctx: &TcContext) -> Option<Piece> {
    let mark = unsafe { (*ctx.skb.skb).mark };
    // A container's packets cross into this namespace with their mark cleared; only a
    // host-joined port's could carry another program's mark, and only one with this tag.
    if mark & wire::FRAGMENT_MARK_TAG_MASK != wire::FRAGMENT_MARK_TAG {
        return None;
    }
    Some(Piece {
        index: (mark >> 13) & 0x3f,
        size: (mark & 0x1fff) * 8,
    })
}

/// Whether `from_container` hands the packet to [`handle`]: a copy it made, or (when `too_big`
/// for the tunnel) an IPv4 packet without DF, which a router may fragment.
#[inline(always)]
pub fn wanted(ctx: &TcContext, ether_type: u16, too_big: bool) -> bool {
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & wire::FRAGMENT_MARK_TAG_MASK == wire::FRAGMENT_MARK_TAG {
        return true;
    }
    too_big
        && ether_type == wire::ETH_P_IP
        && ctx
            .load::<u8>(EthHdr::LEN + 6)
            .is_ok_and(|flags| flags & (wire::IP_DF >> 8) as u8 == 0)
}

/// A verdict's action that is no TC action: the entry point is to tail-call the `fragment`
/// program ([`follow`]).
const TAIL_CALL_FRAGMENT: i32 = -1000;

/// Asks for the `fragment` program, with the tunnel's MTU in `cb[0]`. The tail call itself is
/// made by the entry point ([`follow`]): the verifier allows tail calls only in functions that
/// return `int`, and from_container's steps return a [`Verdict`].
#[inline(always)]
pub fn request(ctx: &TcContext, mtu: u32) -> Verdict {
    unsafe { (*ctx.skb.skb).cb[0] = mtu };
    Verdict {
        counter: Counter::DropTooBig,
        action: TAIL_CALL_FRAGMENT,
    }
}

/// In the entry point: the tail call a verdict asked for ([`request`]), which returns only if
/// the program is not there (the packet is then dropped); any other verdict as it is.
#[inline(always)]
pub fn follow(ctx: &TcContext, verdict: Verdict) -> Verdict {
    if verdict.action != TAIL_CALL_FRAGMENT {
        return verdict;
    }
    unsafe {
        JUMP.tail_call(ctx, jump::FRAGMENT);
    }
    drop(Counter::DropTooBig)
}

/// The `fragment` program: a copy is cut to its piece and sent back into its port; an original
/// too big for the tunnel of MTU `cb[0]` is copied once per further piece, then handed to
/// [`handle_first`] with the pieces' size in `cb[1]`. Two programs, one loop each: the
/// verifier walks each loop once, not once per way out of the other.
pub fn handle(ctx: &TcContext) -> Verdict {
    let port = ifindex(ctx);
    if let Some(piece) = piece_of(ctx) {
        // The mark was ours; it must not steer anything on the underlay.
        ctx.set_mark(0);
        // Piece 0 is always the original, never a copy.
        if piece.index == 0 || cut(ctx, piece).is_err() {
            return drop(Counter::DropTooBig);
        }
        return send_back(port);
    }
    let Some(size) = split(ctx, unsafe { (*ctx.skb.skb).cb[0] }, port) else {
        return drop(Counter::DropTooBig);
    };
    unsafe {
        (*ctx.skb.skb).cb[1] = size;
        JUMP.tail_call(ctx, jump::FRAGMENT_FIRST);
    }
    drop(Counter::DropTooBig)
}

/// The `fragment_first` program: the original, its copies on their way, becomes the first
/// piece: its L4 checksum completed over the whole segment, out of CHECKSUM_PARTIAL, cut.
pub fn handle_first(ctx: &TcContext) -> Verdict {
    let size = unsafe { (*ctx.skb.skb).cb[1] };
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return drop(Counter::DropTooBig);
    };
    let (tot_len, proto) = unsafe { (u16::from_be_bytes((*ip).tot_len) as u32, (*ip).proto) };
    let payload = tot_len.saturating_sub(Ipv4Hdr::LEN as u32);
    if resolve_checksum(ctx, proto, payload).is_err()
        || unpartial(ctx).is_err()
        || cut(ctx, Piece { index: 0, size }).is_err()
    {
        return drop(Counter::DropTooBig);
    }
    send_back(ifindex(ctx))
}

/// A fragment goes back into the port it came in by, to be wrapped like any packet that fits.
#[inline(always)]
fn send_back(port: u32) -> Verdict {
    redirected(Counter::Fragments, unsafe {
        bpf_redirect(port, BPF_F_INGRESS as u64)
    })
}

/// For a packet (Ethernet, IPv4) too big for a tunnel of MTU `mtu` that IPv4 allows to be
/// fragmented (no DF, a header without options: their copy rules are not worth it for packets
/// nobody sends; not GSO; not SCTP, whose CRC32c offload cannot be resolved here): sends a copy
/// per piece after the first back through `port`. The copies never hold the L4 header, so its
/// checksum can wait for the first piece. The pieces' payload size, or None if the packet may
/// not be fragmented.
#[inline(always)]
fn split(ctx: &TcContext, mtu: u32, port: u32) -> Option<u32> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)?;
    let (vihl, frags, tot_len, proto) = unsafe {
        (
            (*ip).vihl,
            u16::from_be_bytes((*ip).frags),
            u16::from_be_bytes((*ip).tot_len) as u32,
            (*ip).proto,
        )
    };
    let gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    if vihl != 0x45
        || frags & wire::IP_DF != 0
        || gso
        || proto == IPPROTO_SCTP
        || mtu < pmtu::IPV4_MIN_MTU
    {
        return None;
    }
    let payload = tot_len.saturating_sub(Ipv4Hdr::LEN as u32);
    let size = (mtu.min(65535) - Ipv4Hdr::LEN as u32) & !7;
    let count = payload.div_ceil(size);
    if !(2..=MAX_FRAGS).contains(&count) || ctx.len() < EthHdr::LEN as u32 + tot_len {
        return None;
    }
    // Hidden from the optimiser: knowing count <= MAX_FRAGS, it would drop the loop's own
    // bound, which is what the verifier needs to see (it lost count's range on the way).
    let count = core::hint::black_box(count);
    // A host-joined port's packet may carry a mark of the host's: the first piece keeps it.
    let mark = unsafe { (*ctx.skb.skb).mark };
    for index in 1..MAX_FRAGS {
        if index >= count {
            break;
        }
        ctx.set_mark(wire::fragment_mark(index, size));
        let cloned = unsafe { bpf_clone_redirect(ctx.skb.skb, port, BPF_F_INGRESS as u64) };
        ctx.set_mark(mark);
        // The copies already sent cannot be called back; the receiver's reassembly times out.
        if cloned != 0 {
            return None;
        }
    }
    Some(size)
}

/// Makes the skb fragment `piece` of the IPv4 packet it holds: the payload before and after
/// removed, the header's length, offset, MF and checksum rewritten.
#[inline(always)]
fn cut(ctx: &TcContext, piece: Piece) -> Result<(), ()> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN).ok_or(())?;
    let (vihl, frags, tot_len) = unsafe {
        (
            (*ip).vihl,
            u16::from_be_bytes((*ip).frags),
            u16::from_be_bytes((*ip).tot_len) as u32,
        )
    };
    let payload = tot_len.saturating_sub(Ipv4Hdr::LEN as u32);
    let offset = piece.index * piece.size;
    if vihl != 0x45 || frags & wire::IP_DF != 0 || piece.size == 0 || offset >= payload {
        return Err(());
    }
    let len = (payload - offset).min(piece.size);
    let mut left = offset;
    for _ in 0..(65536 / SHRINK_STEP + 1) {
        if left == 0 {
            break;
        }
        let step = left.min(SHRINK_STEP);
        ctx.adjust_room(-(step as i32), BPF_ADJ_ROOM_NET, 0)
            .map_err(|_| ())?;
        left -= step;
    }
    if left != 0 {
        return Err(());
    }
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, L4 as u32 + len, 0) } != 0 {
        return Err(());
    }
    // A fragment of a fragment: offsets add up, and the last piece keeps the original's MF.
    let more = offset + len < payload || frags & wire::IP_MF != 0;
    let field =
        ((frags & wire::IP_OFFSET) + (offset / 8) as u16) | if more { wire::IP_MF } else { 0 };
    let ip = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN).ok_or(())?;
    unsafe {
        (*ip).tot_len = ((Ipv4Hdr::LEN as u32 + len) as u16).to_be_bytes();
        (*ip).frags = field.to_be_bytes();
        (*ip).check = [0; 2];
        let bytes = &*ip.cast::<[u8; 20]>();
        (*ip).check = wire::ipv4_header_checksum(bytes).to_be_bytes();
    }
    Ok(())
}

/// Completes a UDP or TCP checksum that is still the pseudo-header seed CHECKSUM_PARTIAL
/// leaves (`~csum_tcpudp_magic(...)`, as `udp4_hwcsum` and `__tcp_v4_send_check` write it),
/// over the whole segment. A checksum that is anything else is the sender's and stays.
#[inline(always)]
fn resolve_checksum(ctx: &TcContext, proto: u8, payload: u32) -> Result<(), ()> {
    let at = match proto {
        wire::IPPROTO_UDP => L4 + 6,
        wire::IPPROTO_TCP => L4 + 16,
        _ => return Ok(()),
    };
    if !linearize(ctx, at + 2) {
        return Err(());
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN).ok_or(())?;
    let (src, dst) = unsafe { ((*ip).src_addr, (*ip).dst_addr) };
    let pseudo = checksum::ipv4_pseudo(src, dst, payload, proto);
    let field = ptr_at::<u16>(ctx, at).ok_or(())?;
    let seed = !checksum::finish(pseudo);
    if unsafe { field.read_unaligned() } != seed {
        return Ok(());
    }
    unsafe { field.write_unaligned(0) };
    let sum = checksum::over_range::<65536>(ctx, L4, payload as usize, pseudo)?;
    let mut check = checksum::finish(sum);
    // UDP's zero means "no checksum"; a sum that comes to zero is sent as all ones.
    if proto == wire::IPPROTO_UDP && check == 0 {
        check = 0xffff;
    }
    let field = ptr_at::<u16>(ctx, at).ok_or(())?;
    unsafe { field.write_unaligned(check) };
    Ok(())
}

/// Takes the skb out of CHECKSUM_PARTIAL: removing bytes from behind the IPv4 header so that
/// `csum_start` falls in front of the data does it (`skb_postpull_rcsum`); they are put back at
/// once. On an skb in any other state this changes nothing.
#[inline(always)]
fn unpartial(ctx: &TcContext) -> Result<(), ()> {
    let p = ptr_at::<[u64; UNPARTIAL / 8]>(ctx, L4).ok_or(())?;
    // Word by word: a byte array copied whole becomes a byte-by-byte memmove call here.
    let w = p.cast::<u64>();
    let saved = unsafe {
        [
            w.read_unaligned(),
            w.add(1).read_unaligned(),
            w.add(2).read_unaligned(),
            w.add(3).read_unaligned(),
            w.add(4).read_unaligned(),
        ]
    };
    ctx.adjust_room(-(UNPARTIAL as i32), BPF_ADJ_ROOM_NET, 0)
        .map_err(|_| ())?;
    ctx.adjust_room(UNPARTIAL as i32, BPF_ADJ_ROOM_NET, 0)
        .map_err(|_| ())?;
    let p = ptr_at::<[u64; UNPARTIAL / 8]>(ctx, L4).ok_or(())?;
    let w = p.cast::<u64>();
    unsafe {
        w.write_unaligned(saved[0]);
        w.add(1).write_unaligned(saved[1]);
        w.add(2).write_unaligned(saved[2]);
        w.add(3).write_unaligned(saved[3]);
        w.add(4).write_unaligned(saved[4]);
    }
    Ok(())
}
