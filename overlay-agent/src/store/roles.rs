//! Least privilege in etcd (RBAC, key-prefix permissions): what each writer of the layout
//! needs, derived from the key layout ([`Keys`]) so the two cannot drift. docs/operations.md
//! (etcd over TLS) shows these as `etcdctl role grant-permission` commands.
//!
//! - `overlay-admin` makes and removes networks and services: read everything, write
//!   `networks/` and `slices/` (a network's removal takes its slices with it), `services/`
//!   and `vips/` (a service and the address its VIP holds are written together).
//! - `overlay-node-<node>`, for a node's agent, its CLI and the plugins on it (the CNI plugin
//!   and the Docker driver act as the node: they read the agent's credentials): read
//!   everything (the agent lists and watches the whole prefix); write its own `nodes/<node>`,
//!   `~state/<node>`, `groups/<node>`, `health/<node>` (exact keys, so node `h1` cannot write `h10`'s) and
//!   `names/<node>/`; and `endpoints/` and `slices/` of every network, because addresses and
//!   slices are claimed in transactions on keys that name no node. Leases need no permission
//!   of their own in etcd 3.4 (a put under a lease needs write on the keys the lease holds).
use super::schema::Keys;

/// One permission of one role, as `etcdctl role grant-permission` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub role: String,
    /// `read` or `readwrite`.
    pub access: &'static str,
    pub key: String,
    /// The key is a prefix (`--prefix=true`), not one exact key.
    pub prefix: bool,
}

impl Grant {
    /// The arguments after `etcdctl`.
    pub fn etcdctl_args(&self) -> Vec<String> {
        let mut args = vec!["role".into(), "grant-permission".into(), self.role.clone()];
        if self.prefix {
            args.push("--prefix=true".into());
        }
        args.extend([self.access.to_string(), self.key.clone()]);
        args
    }
}

pub const ADMIN_ROLE: &str = "overlay-admin";

/// The role of node `node`'s agent, CLI and plugins.
pub fn node_role(node: &str) -> String {
    format!("overlay-node-{node}")
}

fn grant(role: &str, access: &'static str, key: String, prefix: bool) -> Grant {
    Grant {
        role: role.to_string(),
        access,
        key,
        prefix,
    }
}

/// What the administrator's role holds.
pub fn admin_grants(keys: &Keys) -> Vec<Grant> {
    vec![
        grant(ADMIN_ROLE, "read", keys.all(), true),
        grant(ADMIN_ROLE, "readwrite", keys.networks(), true),
        grant(ADMIN_ROLE, "readwrite", keys.all_slices(), true),
        grant(ADMIN_ROLE, "readwrite", keys.all_services(), true),
        grant(ADMIN_ROLE, "readwrite", keys.all_vips(), true),
    ]
}

/// What node `node`'s role holds.
pub fn node_grants(keys: &Keys, node: &str) -> Vec<Grant> {
    let role = node_role(node);
    vec![
        grant(&role, "read", keys.all(), true),
        grant(&role, "readwrite", keys.node(node), false),
        grant(&role, "readwrite", keys.state(node), false),
        grant(&role, "readwrite", keys.groups(node), false),
        grant(&role, "readwrite", keys.health(node), false),
        grant(&role, "readwrite", keys.names(node), true),
        grant(&role, "readwrite", keys.all_endpoints(), true),
        grant(&role, "readwrite", keys.all_slices(), true),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_writes_its_own_keys_exactly() {
        let grants = node_grants(&Keys::new("/overlay"), "h1");
        let writes: Vec<String> = grants
            .iter()
            .filter(|g| g.access == "readwrite")
            .map(|g| format!("{}{}", g.key, if g.prefix { "*" } else { "" }))
            .collect();
        assert_eq!(
            writes,
            [
                "/overlay/nodes/h1",
                "/overlay/~state/h1",
                "/overlay/groups/h1",
                "/overlay/health/h1",
                "/overlay/names/h1/*",
                "/overlay/endpoints/*",
                "/overlay/slices/*",
            ]
        );
        assert_eq!(
            grants[1].etcdctl_args().join(" "),
            "role grant-permission overlay-node-h1 readwrite /overlay/nodes/h1"
        );
        assert_eq!(
            grants[0].etcdctl_args().join(" "),
            "role grant-permission overlay-node-h1 --prefix=true read /overlay/"
        );
    }

    /// docs/operations.md shows the layout as commands to type: they are these.
    #[test]
    fn the_docs_show_these_grants() {
        let docs = include_str!("../../../docs/operations.md");
        let keys = Keys::new("/overlay");
        for grant in admin_grants(&keys).iter().chain(&node_grants(&keys, "h1")) {
            let line = format!("etcdctl {}", grant.etcdctl_args().join(" "));
            assert!(docs.contains(&line), "docs/operations.md lacks {line:?}");
        }
        let shown = docs
            .matches("etcdctl role grant-permission overlay-")
            .count();
        assert_eq!(
            shown,
            admin_grants(&keys).len() + node_grants(&keys, "h1").len()
        );
    }
}
