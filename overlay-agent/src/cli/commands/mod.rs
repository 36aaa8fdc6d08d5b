//! The user-facing commands that change the cluster: networks, endpoints, peers, the host's own
//! address. Each checks its input before it writes anything, writes etcd through the store's
//! transactions, and does the node-local plumbing over netlink; the running agent picks the
//! change up from etcd and programs the maps.
mod claim;
mod endpoint;
mod host;
mod network;
mod peer;
mod teardown;
mod wait;

pub use claim::{MayRemain, unregister_eventually};
pub use endpoint::{
    Attach, Made, endpoint_add, endpoint_make, endpoint_release, endpoint_release_local,
    endpoint_rm, endpoint_set_netns,
};
pub use host::{host_join, host_leave};
pub use network::{Created, NetworkSpec, network_create, network_rm};
pub use peer::{peer_add, peer_rm};
pub use teardown::{Teardown, teardown};
pub use wait::wait_served;

use crate::{dataplane::PinDir, store::Store};

/// Who is acting: the node's name, its pins (to see when its agent has served a change), and
/// etcd.
pub struct Ctx {
    pub store: Store,
    pub node: String,
    pub pins: PinDir,
}
