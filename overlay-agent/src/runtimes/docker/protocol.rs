//! libnetwork's remote protocols as they go over the wire: JSON bodies of HTTP POSTs named
//! `/<Interface>.<Method>` (moby `libnetwork/drivers/remote/api` and
//! `libnetwork/ipams/remote/api`). Only the fields we read or send; unknown fields are ignored.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What Docker sends as the body's content type; replies carry it too.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// The generic driver options (`docker network create -o key=value`) inside `Options`.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";
/// `--internal`, inside `Options`.
pub const INTERNAL: &str = "com.docker.network.internal";
/// The IPAM option saying an address request is for the network's gateway.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

// ---- NetworkDriver ----

#[derive(Debug, Default, Deserialize)]
pub struct IpamData {
    #[serde(rename = "Pool", default)]
    pub pool: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    #[serde(rename = "Options", default)]
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", default)]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// DeleteNetwork's body.
#[derive(Debug, Default, Deserialize)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
}

/// The body of DeleteEndpoint, Join, Leave, EndpointOperInfo.
#[derive(Debug, Default, Deserialize)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
    /// Join's: the container's network namespace (`/var/run/docker/netns/<id>`).
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct EndpointInterface {
    #[serde(rename = "Address", default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(
        rename = "MacAddress",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID", default)]
    pub network_id: String,
    #[serde(rename = "EndpointID", default)]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default)]
    pub interface: Option<EndpointInterface>,
    /// The endpoint's driver options (`docker network connect --driver-opt KEY=VALUE`, or a
    /// compose file's `driver_opts`): [`SERVICE_OPTION`].
    #[serde(rename = "Options", default)]
    pub options: BTreeMap<String, Value>,
}

/// The endpoint option that makes a container a backend of services of its network:
/// `com.overlay.service=web` (several: `web,dns`).
pub const SERVICE_OPTION: &str = "com.overlay.service";

impl CreateEndpoint {
    /// The services [`SERVICE_OPTION`] names, in order; none if it is absent.
    pub fn services(&self) -> Vec<String> {
        match self.options.get(SERVICE_OPTION) {
            Some(Value::String(list)) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Only what Docker did not choose itself: sending back an address it gave is an error.
#[derive(Debug, Serialize)]
pub struct CreateEndpointReply {
    #[serde(rename = "Interface")]
    pub interface: EndpointInterface,
}

#[derive(Debug, Serialize)]
pub struct InterfaceName {
    /// The interface in the host that Docker moves into the container.
    #[serde(rename = "SrcName")]
    pub src_name: String,
    /// Docker names it `<prefix><n>` there: eth0, or eth1... on a second network.
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

/// No IPv4 Gateway (Docker's docker_gwbridge is the IPv4 way out: network_driver.rs's Join);
/// the subnet's on-link route comes with the address. On a dual-stack network, the IPv6 way
/// out: `GatewayIPv6`, and the same as a `::/0` static route, which is what Docker 20.10
/// installs (libnetwork programs an endpoint's `GatewayIPv6` only on the endpoint that has an
/// IPv4 Gateway, here docker_gwbridge's, which has no IPv6 one).
#[derive(Debug, Serialize)]
pub struct JoinReply {
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    #[serde(rename = "StaticRoutes", skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
}

/// A route Docker adds in the container at Join.
#[derive(Debug, Serialize)]
pub struct StaticRoute {
    #[serde(rename = "Destination")]
    pub destination: String,
    /// 0: through `NextHop` (libnetwork's NEXTHOP), 1: on the interface (CONNECTED).
    #[serde(rename = "RouteType")]
    pub route_type: u8,
    #[serde(rename = "NextHop")]
    pub next_hop: String,
}

/// libnetwork's `types.NEXTHOP`.
pub const ROUTE_NEXTHOP: u8 = 0;

// ---- IpamDriver ----

#[derive(Debug, Default, Deserialize)]
pub struct RequestPool {
    #[serde(rename = "Pool", default)]
    pub pool: String,
    #[serde(rename = "SubPool", default)]
    pub sub_pool: String,
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

#[derive(Debug, Serialize)]
pub struct RequestPoolReply {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Pool")]
    pub pool: String,
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RequestAddress {
    #[serde(rename = "PoolID", default)]
    pub pool_id: String,
    /// A specific address (`docker run --ip`, `network create --gateway`), or empty.
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Options", default)]
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
pub struct RequestAddressReply {
    /// With the pool's prefix length: `10.20.0.5/16`.
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// ReleaseAddress's body.
#[derive(Debug, Default, Deserialize)]
pub struct AddressRef {
    #[serde(rename = "PoolID", default)]
    pub pool_id: String,
    #[serde(rename = "Address", default)]
    pub address: String,
}

/// An error reply. The network driver's replies name the field `Err`, the IPAM driver's
/// `Error` (moby's two `api.Response` types): both are set, each side reads its own.
pub fn error_reply(message: &str) -> Value {
    serde_json::json!({ "Err": message, "Error": message })
}

/// Docker's requests are outside input: every body parses or is refused in one line (the
/// refusal is what `docker network create` prints), and the checks that need no etcd hold the
/// same.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_option_names_services() {
        let req: CreateEndpoint = serde_json::from_str(
            r#"{"NetworkID":"a","EndpointID":"b","Options":{"com.overlay.service":"web, dns","com.docker.network.endpoint.exposedports":[]}}"#,
        )
        .unwrap();
        assert_eq!(req.services(), ["web", "dns"]);
        let none: CreateEndpoint = serde_json::from_str(r#"{"NetworkID":"a"}"#).unwrap();
        assert!(none.services().is_empty());
    }

    #[test]
    fn a_join_reply_has_the_ipv6_way_out_only_when_there_is_one() {
        let name = || InterfaceName {
            src_name: "ovc".into(),
            dst_prefix: "eth".into(),
        };
        let v4 = JoinReply {
            interface_name: name(),
            gateway_ipv6: String::new(),
            static_routes: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&v4).unwrap(),
            r#"{"InterfaceName":{"SrcName":"ovc","DstPrefix":"eth"}}"#
        );
        let dual = JoinReply {
            interface_name: name(),
            gateway_ipv6: "fd00:20::a14:1".into(),
            static_routes: vec![StaticRoute {
                destination: "::/0".into(),
                route_type: ROUTE_NEXTHOP,
                next_hop: "fd00:20::a14:1".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&dual).unwrap(),
            r#"{"InterfaceName":{"SrcName":"ovc","DstPrefix":"eth"},"GatewayIPv6":"fd00:20::a14:1","StaticRoutes":[{"Destination":"::/0","RouteType":0,"NextHop":"fd00:20::a14:1"}]}"#
        );
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        runtimes::docker::{ipam_driver, parse},
        shared::fuzzing::{CASES, input, one_line, refused},
    };

    const FIELDS: &[&str] = &[
        "NetworkID",
        "EndpointID",
        "Options",
        "IPv4Data",
        "IPv6Data",
        "Pool",
        "SubPool",
        "V6",
        "PoolID",
        "Address",
        "AddressIPv6",
        "MacAddress",
        "Interface",
        GENERIC_OPTIONS,
        INTERNAL,
        REQUEST_ADDRESS_TYPE,
        "vni",
        "network",
    ];
    const A_CREATE_NETWORK: &str = r#"{"NetworkID":"abc","Options":{"com.docker.network.generic":{"vni":"42","network":"blue"},"com.docker.network.internal":true},"IPv4Data":[{"Pool":"10.20.0.0/16"}],"IPv6Data":[]}"#;
    const A_CREATE_ENDPOINT: &str = r#"{"NetworkID":"abc","EndpointID":"def","Interface":{"Address":"10.20.1.2/16","AddressIPv6":"","MacAddress":"02:42:0a:14:01:02"},"Options":{"com.overlay.service":"web,dns"}}"#;
    const A_REQUEST: &str = r#"{"Pool":"10.20.0.0/16","SubPool":"","V6":false,"PoolID":"10.20.0.0/16","Address":"10.20.1.2","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn network_driver_requests(net in input(A_CREATE_NETWORK, FIELDS), ep in input(A_CREATE_ENDPOINT, FIELDS)) {
            refused(parse::<CreateNetwork>(&net))?;
            refused(parse::<NetworkRef>(&net))?;
            refused(parse::<CreateEndpoint>(&ep))?;
            refused(parse::<EndpointRef>(&ep))?;
        }

        #[test]
        fn ipam_requests(body in input(A_REQUEST, FIELDS)) {
            match parse::<RequestPool>(&body) {
                Ok(req) => refused(ipam_driver::request_pool(req))?,
                Err(e) => one_line(&e)?,
            }
            refused(parse::<RequestAddress>(&body))?;
            refused(parse::<AddressRef>(&body))?;
        }
    }
}
