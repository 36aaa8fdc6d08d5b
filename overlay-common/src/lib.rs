//! Types that the eBPF programs and the agent agree on: map keys and values, counter indices,
//! map names and the VXLAN wire constants. Every layout shared across the kernel boundary lives
//! here and nowhere else.
#![no_std]

pub mod maps;
pub mod monitor;
pub mod nodeport;
pub mod stats;
pub mod vtep;
pub mod wire;

pub use maps::*;
pub use nodeport::*;
pub use stats::Counter;
pub use vtep::VtepAddr;
