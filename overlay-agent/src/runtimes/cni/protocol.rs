//! CNI's wire types: what a runtime passes in (environment, network configuration on stdin) and
//! what a plugin prints (a result, a version list, or an error object). Spec 1.0.0, with 1.1's
//! STATUS and GC: <https://github.com/containernetworking/cni/blob/main/SPEC.md>.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The versions whose configuration and result formats this plugin speaks. 0.3.x and 0.4.0
/// results differ from 1.x only by a `version` in each IP entry.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// What a reply says it is when the configuration does not say (the newest supported).
pub const LATEST: &str = "1.1.0";

/// The version a reply to `stdin` is written in: the configuration's, else [`LATEST`].
pub fn reply_version(stdin: &[u8]) -> String {
    parse_conf(stdin)
        .ok()
        .map(|c| c.cni_version)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| LATEST.to_string())
}

/// The plugin entry of a conflist, with `name` and `cniVersion` added by the runtime. Unknown
/// keys (`args`, `runtimeConfig`, `prevResult`, other plugins' keys) are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    /// The CNI network's name (the conflist's), not the overlay network's.
    #[serde(default)]
    pub name: String,
    /// The overlay network to attach to. Required.
    pub network: Option<String>,
    /// This node's name, when it is not the hostname.
    pub node: Option<String>,
    /// Where the node's agent writes its status (default `/run/overlay`): the plugin takes
    /// etcd's address, the key prefix and the pin directory from it.
    pub run_dir: Option<PathBuf>,
    /// etcd endpoints, instead of the agent's.
    pub etcd: Option<Vec<String>>,
    /// The container interface's MTU, instead of the network's.
    pub mtu: Option<u32>,
    /// The services of the overlay network the container is a backend of (`"services":
    /// ["web"]`; each must exist: `overlay-agent service create`).
    #[serde(default)]
    pub services: Vec<String>,
    /// GC: the attachments the runtime still has.
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// ADD and CHECK in a chain: what the plugins before this one made.
    pub prev_result: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// An ADD's (and a CHECK's previous) result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Debug, Serialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The container's namespace, for the interface inside it; absent for the host side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct IpConfig {
    /// "4": only in 0.3.x and 0.4.0 results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    /// Address with the subnet's prefix length.
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    pub interface: usize,
}

#[derive(Debug, Serialize)]
pub struct Route {
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// The result's `dns` (CNI spec 1.0): the network's resolver, its name as the search domain.
#[derive(Debug, Default, Serialize)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    pub cni_version: String,
    pub supported_versions: Vec<&'static str>,
}

/// Well-known error codes (the spec reserves 0-99) and ours (100+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decoding = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot serve ADDs now.
    NotAvailable = 50,
    /// CHECK: the attachment is not what ADD made.
    Mismatch = 100,
    /// The plumbing or etcd refused an ADD or DEL (the message says which).
    Failed = 101,
}

/// A CNI error object, printed on stdout with a non-zero exit.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Error {
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl Error {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            cni_version: String::new(),
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn code(&self) -> u32 {
        self.code
    }
}

/// ADD in a chain: the previous plugins' result with ours appended (our IP entries point at
/// our interfaces' new indices), as the spec asks of a plugin that gets a `prevResult`.
pub fn chain(prev: &serde_json::Value, ours: AddResult) -> Result<serde_json::Value, String> {
    let mut out = prev.clone();
    let obj = out
        .as_object_mut()
        .ok_or_else(|| "not a JSON object".to_string())?;
    let list = |obj: &mut serde_json::Map<String, serde_json::Value>, key: &str| {
        let v = obj
            .entry(key)
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if v.is_null() {
            *v = serde_json::Value::Array(Vec::new());
        }
        v.as_array_mut()
            .map(std::mem::take)
            .ok_or_else(|| format!("{key} is not a list"))
    };
    let mut interfaces = list(obj, "interfaces")?;
    let offset = interfaces.len();
    let mut ips = list(obj, "ips")?;
    let mut routes = list(obj, "routes")?;
    for i in &ours.interfaces {
        interfaces.push(to_value(i));
    }
    for ip in ours.ips {
        ips.push(to_value(&IpConfig {
            interface: ip.interface + offset,
            ..ip
        }));
    }
    for r in &ours.routes {
        routes.push(to_value(r));
    }
    obj.insert("interfaces".into(), interfaces.into());
    obj.insert("ips".into(), ips.into());
    obj.insert("routes".into(), routes.into());
    // The previous plugins' resolvers first: theirs were configured before ours.
    let dns = obj
        .entry("dns")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if dns.is_null() {
        *dns = serde_json::Value::Object(Default::default());
    }
    let dns = dns
        .as_object_mut()
        .ok_or_else(|| "dns is not an object".to_string())?;
    for (key, ours) in [
        ("nameservers", &ours.dns.nameservers),
        ("search", &ours.dns.search),
    ] {
        let list = dns
            .entry(key)
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        let list = list
            .as_array_mut()
            .ok_or_else(|| format!("dns.{key} is not a list"))?;
        for v in ours {
            if !list.iter().any(|x| x == v.as_str()) {
                list.push(v.clone().into());
            }
        }
    }
    obj.insert("cniVersion".into(), ours.cni_version.into());
    Ok(out)
}

fn to_value(part: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(part).expect("serializable")
}

/// Whether a previous result lists `ip` among its addresses.
pub fn has_address(prev: &serde_json::Value, ip: std::net::Ipv4Addr) -> bool {
    let prefix = format!("{ip}/");
    prev["ips"].as_array().is_some_and(|ips| {
        ips.iter().any(|e| {
            e["address"]
                .as_str()
                .is_some_and(|a| a.starts_with(&prefix))
        })
    })
}

/// Parses a configuration; a decoding error names what is wrong with it.
pub fn parse_conf(stdin: &[u8]) -> Result<NetConf, Error> {
    serde_json::from_slice(stdin).map_err(|e| {
        Error::new(
            Code::Decoding,
            format!("the network configuration is not valid JSON for this plugin: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_podman_add_configuration_parses_and_unknown_keys_are_ignored() {
        let conf = parse_conf(
            br#"{"cniVersion":"1.0.0","name":"blue-cni","type":"overlay","network":"blue",
                 "node":"h1","mtu":1400,"runtimeConfig":{"x":1},"args":{"a":"b"},
                 "prevResult":{"interfaces":[]}}"#,
        )
        .unwrap();
        assert_eq!(conf.network.as_deref(), Some("blue"));
        assert_eq!(conf.node.as_deref(), Some("h1"));
        assert_eq!(conf.mtu, Some(1400));
        assert_eq!(conf.cni_version, "1.0.0");
    }

    #[test]
    fn bad_json_and_wrong_types_are_decoding_errors_that_say_where() {
        for bad in [&b"{"[..], br#"{"network": 7}"#, br#"{"mtu": "big"}"#] {
            let e = parse_conf(bad).unwrap_err();
            assert_eq!(e.code(), Code::Decoding as u32);
            assert!(e.msg.contains("line 1"), "{}", e.msg);
        }
    }

    #[test]
    fn a_chained_add_appends_to_the_previous_result_and_renumbers_its_interfaces() {
        let prev = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "lo"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}],
            "dns": {"nameservers": ["10.0.0.53"]}
        });
        let ours = AddResult {
            cni_version: "1.0.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:42:0a:0a:00:01".into(),
                mtu: Some(1450),
                sandbox: Some("/run/netns/x".into()),
            }],
            ips: vec![IpConfig {
                version: None,
                address: "10.10.0.1/16".into(),
                gateway: None,
                interface: 0,
            }],
            routes: Vec::new(),
            dns: Dns {
                nameservers: vec!["10.10.0.1".into()],
                search: vec!["blue".into()],
            },
        };
        let out = chain(&prev, ours).unwrap();
        assert_eq!(out["dns"]["nameservers"][1], "10.10.0.1");
        assert_eq!(out["dns"]["search"][0], "blue");
        assert_eq!(out["interfaces"][1]["name"], "eth0");
        assert_eq!(out["ips"][1]["interface"], 1);
        assert_eq!(out["ips"][0]["address"], "127.0.0.1/8");
        assert_eq!(out["dns"]["nameservers"][0], "10.0.0.53");
        assert!(has_address(&out, "10.10.0.1".parse().unwrap()));
        assert!(!has_address(&out, "10.10.0.10".parse().unwrap()));
        assert!(
            chain(
                &serde_json::json!([1]),
                AddResult {
                    cni_version: String::new(),
                    interfaces: vec![],
                    ips: vec![],
                    routes: vec![],
                    dns: Dns::default(),
                }
            )
            .is_err()
        );
    }

    #[test]
    fn gc_attachments_parse() {
        let conf = parse_conf(
            br#"{"cniVersion":"1.1.0","network":"blue","cni.dev/valid-attachments":
                 [{"containerID":"abc","ifname":"eth0"}]}"#,
        )
        .unwrap();
        let valid = conf.valid_attachments.unwrap();
        assert_eq!(valid[0].container_id, "abc");
        assert_eq!(valid[0].ifname, "eth0");
    }
}

/// A runtime's configuration is outside input: any bytes parse or are refused in one line, and
/// a previous result of any shape is chained onto or refused, never a panic.
#[cfg(test)]
pub(crate) mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::shared::fuzzing::{CASES, input, one_line, value};

    pub const A_CONF: &str = r#"{"cniVersion":"1.1.0","name":"podman","type":"overlay-cni","network":"blue","node":"h1","runDir":"/run/overlay","etcd":["http://127.0.0.1:2379"],"mtu":1400,"services":["web"],"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],"prevResult":{"interfaces":[],"ips":[],"routes":[]}}"#;
    pub const CONF: &[&str] = &[
        "cniVersion",
        "name",
        "type",
        "network",
        "node",
        "runDir",
        "etcd",
        "mtu",
        "cni.dev/valid-attachments",
        "prevResult",
        "containerID",
        "ifname",
        "interfaces",
        "ips",
        "routes",
        "address",
    ];

    fn ours() -> AddResult {
        AddResult {
            cni_version: LATEST.into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:42:0a:0a:01:02".into(),
                mtu: Some(1450),
                sandbox: Some("/run/netns/c1".into()),
            }],
            ips: vec![IpConfig {
                version: None,
                address: "10.10.1.2/16".into(),
                gateway: None,
                interface: 0,
            }],
            routes: vec![],
            dns: Dns::default(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn configurations(stdin in input(A_CONF, CONF)) {
            let _ = reply_version(&stdin);
            if let Err(e) = parse_conf(&stdin) {
                prop_assert_eq!(e.code(), Code::Decoding as u32);
                one_line(&e.msg)?;
            }
        }

        #[test]
        fn previous_results(prev in value(CONF), ip in any::<[u8; 4]>()) {
            let _ = has_address(&prev, ip.into());
            match chain(&prev, ours()) {
                Ok(out) => {
                    // Ours appended last, pointing at our interface's new index.
                    let n = out["interfaces"].as_array().map_or(0, Vec::len);
                    let last = &out["ips"].as_array().unwrap().last().unwrap()["interface"];
                    prop_assert_eq!(last.as_u64(), Some(n as u64 - 1));
                }
                Err(e) => one_line(&e)?,
            }
        }
    }
}
