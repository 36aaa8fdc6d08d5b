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

/// A MAC address as two integers. On this target a `[u8; 6]` copied from one place in memory to
/// another becomes a call to a byte-by-byte `memmove` subprogram; as integers it is two loads
/// and two stores, inline.
#[derive(Clone, Copy)]
pub struct MacWords(u32, u16);

impl MacWords {
    pub const ZERO: MacWords = MacWords(0, 0);

    #[inline(always)]
    pub fn read(p: *const [u8; 6]) -> Self {
        let p = p.cast::<u8>();
        unsafe {
            Self(
                p.cast::<u32>().read_unaligned(),
                p.add(4).cast::<u16>().read_unaligned(),
            )
        }
    }

    /// As bytes again (in registers: a value, not a copy between two places in memory).
    #[inline(always)]
    pub fn bytes(self) -> [u8; 6] {
        let [a, b, c, d] = self.0.to_ne_bytes();
        let [e, f] = self.1.to_ne_bytes();
        [a, b, c, d, e, f]
    }

    #[inline(always)]
    pub fn write(self, p: *mut [u8; 6]) {
        let p = p.cast::<u8>();
        unsafe {
            p.cast::<u32>().write_unaligned(self.0);
            p.add(4).cast::<u16>().write_unaligned(self.1);
        }
    }
}
