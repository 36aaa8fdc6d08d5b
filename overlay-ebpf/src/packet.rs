//! Bounds-checked direct access to packet bytes.
use aya_ebpf::programs::TcContext;

/// Makes the first `len` bytes directly readable, pulling them into the linear area when the skb
/// is paged (GRO'd or GSO packets may carry headers in fragments). False: the packet is shorter.
#[inline(always)]
pub fn linearize(ctx: &TcContext, len: usize) -> bool {
    if ctx.data() + len <= ctx.data_end() {
        return true;
    }
    if (ctx.len() as usize) < len || ctx.pull_data(len as u32).is_err() {
        return false;
    }
    ctx.data() + len <= ctx.data_end()
}

/// A pointer to a `T` at `offset`, or None if the packet ends before it. The check is the one
/// the verifier needs to see before any dereference.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data() + offset;
    if start + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(start as *mut T)
}

/// The ifindex of the device the packet arrived on.
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    unsafe { (*ctx.skb.skb).ifindex }
}
