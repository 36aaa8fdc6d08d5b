//! The etcd layout: which key holds what, and the JSON each value carries. Everything that
//! knows a key's shape or a value's fields lives here.
//!
//! ```text
//! <prefix>/networks/<net>              {"vni":42,"subnet":"10.10.0.0/16","port":4789,"mtu":1450,"slice_prefix":24,"bum_rate":1000}
//! <prefix>/nodes/<node>                {"vtep":"10.0.0.1","mtu":1500}         under the node's lease
//! <prefix>/slices/<net>/<a.b.c.d-len>  {"node":"h1"}                          created in a transaction
//! <prefix>/endpoints/<net>/<ip>        {"kind":"container","name":"c1","mac":"02:42:0a:0a:01:02",
//!                                       "node":"h1","port":"ove1a2b3c4d","netns":"c1"}
//! <prefix>/names/<node>/<name>         {"network":"blue","ip":"10.10.1.2"}   endpoint names per node
//! <prefix>/groups/<node>                {"42":["239.1.1.1"]}                   under the node's lease
//! <prefix>/health/<node>                {"blue":{"10.10.1.2":[80]}}            under the node's lease
//! <prefix>/services/<net>/<name>       {"vip":"10.10.255.254","ports":[{"port":80,"proto":"tcp"}]}
//! <prefix>/vips/<net>/<ip>             {"service":"web"}      a service's VIP, held like an address
//! ```
//! An endpoint that is a backend of services names them: `"services":["web"]` (store/services.rs).
mod checks;
mod endpoint;
mod keys;
mod network;
mod node;

pub use checks::{check_name, check_port, check_vni, check_vtep};
pub use endpoint::{Endpoint, EndpointRecord, Kind, Location};
pub use keys::{Key, Keys};
pub use network::{DEFAULT_BUM_RATE, Network, NetworkRecord};
pub use node::{
    GroupsRecord, HealthRecord, MAX_PUBLISHED_GROUPS, NameRecord, NodeRecord, NodeStateRecord,
    SliceRecord, failing,
};

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

pub const DEFAULT_PREFIX: &str = "/overlay";
/// 24 bits (RFC 7348); 0 is refused because it reads as "unset".
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Parses a stored value, with an error that says what was wrong with it.
pub fn decode<T: for<'de> Deserialize<'de>>(value: &[u8]) -> Result<T> {
    const MAX: usize = 64 * 1024;
    ensure!(
        value.len() <= MAX,
        "value of {} bytes is larger than any record ({MAX} at most)",
        value.len()
    );
    serde_json::from_slice(value).map_err(|e| {
        anyhow::anyhow!(
            "not a valid record: {}",
            crate::shared::text::one_line(&e.to_string())
        )
    })
}

pub fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records always serialize")
}

/// Decoding and validating outside input never panics (fuzz.rs).
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
