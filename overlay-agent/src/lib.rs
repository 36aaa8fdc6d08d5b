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

#[cfg(test)]
mod house;
