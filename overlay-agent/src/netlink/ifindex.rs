//! Interface names and indexes in this network namespace, one libc call each (no netlink
//! socket): for the hot paths that only need to know whether a name still has its index.
use std::ffi::CString;

/// The ifindex of a local interface, None if there is none by that name.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => None,
        i => Some(i),
    }
}

/// The name of interface `ifindex` in this network namespace.
pub fn iface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}
