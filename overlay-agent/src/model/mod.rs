//! The controller's pure core: what the cluster holds, what this node's maps should hold, and
//! the difference, and the names the node's resolver answers. No I/O, so it is unit-tested without a kernel or etcd.
pub mod cluster;
pub mod delta;
pub mod desired;
pub mod names;
#[cfg(test)]
pub mod testing;
