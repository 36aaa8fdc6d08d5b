//! The node's syncs: each one keeps one kind of kernel state (GRO devices, flood lists and
//! IGMP queriers, the tunnel guard, egress NAT, the MTU) equal to what the cluster wants.
pub mod egress;
pub mod flood;
pub mod gro;
pub mod mtu;
pub mod tunnel_guard;
