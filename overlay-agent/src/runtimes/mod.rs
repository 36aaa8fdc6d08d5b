//! Adapters from a container runtime's protocol onto endpoint add and rm.
pub mod cni;
pub mod docker;
