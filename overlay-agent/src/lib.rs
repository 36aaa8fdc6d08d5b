//! overlay-agent: keeps a node's eBPF VXLAN dataplane equal to the cluster state.
pub mod dataplane;
pub mod inspect;
pub mod net;
