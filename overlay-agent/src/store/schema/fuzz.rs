//! etcd's values and keys are outside input: another agent's version, a hand edit, a bad
//! actor with write access. Decoding and validating any of them never panics, and every
//! refusal is one line (it is logged with its key and skipped).
use proptest::prelude::*;

use super::*;
use crate::shared::fuzzing::{CASES, input, one_line, plausible_string, refused};

const A_NETWORK: &str = r#"{"vni":42,"subnet":"10.10.0.0/16","port":4789,"mtu":1450,"slice_prefix":24,"bum_rate":1000,"internal":true,"subnet6":"fd00:10::/64"}"#;
const A_NODE: &str = r#"{"vtep":"10.0.0.1","mtu":1500}"#;
const AN_ENDPOINT: &str = r#"{"kind":"host","name":"c1","mac":"02:42:0a:0a:01:02","node":"h1","port":"ove1a2b3c4d","iface":"ovh42","netns":"c1","vtep":"10.0.0.2","owner":"cni:podman","services":["web","dns"]}"#;
const A_STATE: &str = r#"{"revision":7,"digest":"ab12","entries":3,"node":"h1","network":"blue","ip":"10.10.1.2","42":["239.1.1.1"]}"#;
const NETWORK: &[&str] = &[
    "vni",
    "subnet",
    "port",
    "mtu",
    "slice_prefix",
    "bum_rate",
    "internal",
    "subnet6",
];
const NODE: &[&str] = &["vtep", "mtu"];
const ENDPOINT: &[&str] = &[
    "kind", "name", "mac", "node", "port", "iface", "netns", "vtep", "owner", "services",
];
const OTHERS: &[&str] = &[
    "node", "network", "ip", "revision", "digest", "entries", "42", "43", "0",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn network_records(value in input(A_NETWORK, NETWORK), name in plausible_string()) {
        match decode::<NetworkRecord>(&value) {
            Ok(rec) => refused(rec.validate(&name))?,
            Err(e) => one_line(&e)?,
        }
    }

    #[test]
    fn endpoint_records(
        value in input(AN_ENDPOINT, ENDPOINT),
        network in plausible_string(),
        ip in plausible_string(),
    ) {
        match decode::<EndpointRecord>(&value) {
            Ok(rec) => refused(rec.validate(&network, &ip))?,
            Err(e) => one_line(&e)?,
        }
    }

    #[test]
    fn node_group_name_slice_and_state_records(
        value in input(A_STATE, OTHERS),
        node in input(A_NODE, NODE),
    ) {
        refused(decode::<NodeRecord>(&node))?;
        refused(decode::<GroupsRecord>(&value))?;
        refused(decode::<HealthRecord>(&value))?;
        refused(decode::<NameRecord>(&value))?;
        refused(decode::<SliceRecord>(&value))?;
        refused(decode::<NodeStateRecord>(&value))?;
    }

    #[test]
    fn names_and_vnis(name in plausible_string(), vni in any::<u32>()) {
        refused(check_name("network", &name))?;
        refused(check_vni(vni))?;
    }

    #[test]
    fn any_key_parses_or_is_ignored(key in any::<Vec<u8>>()) {
        let _ = Keys::new(DEFAULT_PREFIX).parse(&key);
    }

    #[test]
    fn keys_of_valid_names_parse_back(
        a in "[a-z0-9][a-z0-9._-]{0,20}",
        b in "[a-z0-9][a-z0-9._-]{0,20}",
        prefix in prop::sample::select(&["/overlay", "/overlay/", "/x/y", ""][..]),
    ) {
        let keys = Keys::new(prefix);
        let parse = |k: String| keys.parse(k.as_bytes());
        prop_assert_eq!(parse(keys.network(&a)), Some(Key::Network(a.clone())));
        prop_assert_eq!(parse(keys.node(&a)), Some(Key::Node(a.clone())));
        prop_assert_eq!(parse(keys.groups(&a)), Some(Key::Groups(a.clone())));
        prop_assert_eq!(parse(keys.health(&a)), Some(Key::Health(a.clone())));
        prop_assert_eq!(
            parse(keys.name(&a, &b)),
            Some(Key::Name { node: a.clone(), name: b.clone() })
        );
        // A key one segment deeper is not ours.
        prop_assert_eq!(parse(format!("{}/{b}", keys.network(&a))), None);
    }
}
