//! The agent's code in layers, bottom to top: each group imports only the groups below it
//! (docs/architecture.md). `store`, `dataplane` and `netlink` are the only code that speaks
//! etcd, aya and rtnetlink.
pub mod shared;

pub mod dataplane;
pub mod netlink;
pub mod store;

pub mod status;

pub mod model;

pub mod syncs;

pub mod daemon;

pub mod cli;

pub mod runtimes;

// Temporary: the old paths, until every user says the new one (issue 27, P5 deletes these).
pub use cli::{commands, doctor, inspect, monitor, reference as cli_reference, report};
pub use daemon::{self as agent, metrics};
pub use model::{cluster, delta, desired};
pub use netlink as plumbing;
pub use runtimes::{cni, docker};
#[cfg(test)]
use shared::fuzzing;
pub use shared::{hash, ifnames, ipam, lock, net, text};
pub use syncs::{egress, flood, gro, mtu, tunnel_guard};
