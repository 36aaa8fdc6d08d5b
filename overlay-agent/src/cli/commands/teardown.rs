//! `teardown`: everything the agent and its commands made on this node removed.

use anyhow::{Result, bail};

use crate::cli::resolv_conf;
use crate::{
    dataplane::PinDir,
    netlink::Netlink,
    shared::ifnames::{self},
    store::{Store, schema::Endpoint},
};

/// What `teardown` removed.
#[derive(Debug, Default)]
pub struct Teardown {
    pub endpoints: usize,
    pub interfaces: Vec<String>,
    pub etcd: Option<String>,
}

/// Removes everything the agent and its commands made on this node: its endpoints and
/// registration in etcd (when reachable), its interfaces, its pinned programs, links and maps,
/// and its status file. Refuses while the node's agent runs: it would put it all back.
pub async fn teardown(
    node: &str,
    pins: &PinDir,
    run_dir: &std::path::Path,
    store: Result<Store>,
) -> Result<Teardown> {
    let status_file = crate::status::status_path(run_dir, node);
    if let Ok(agent) = crate::status::running(run_dir, node) {
        bail!(
            "the agent of node {node} is running (pid {}); stop it first",
            agent.pid
        );
    }
    let mut done = Teardown::default();
    match store {
        Ok(store) => {
            let mine: Vec<Endpoint> = store
                .endpoints(None)
                .await?
                .into_iter()
                .filter(|e| e.node() == Some(node))
                .collect();
            for ep in &mine {
                store.delete_endpoint(ep).await?;
                if let Some(ns) = &ep.netns
                    && let Err(e) = resolv_conf::remove(ns, &ep.name)
                {
                    log::warn!("endpoint {}: {e:#}", ep.name);
                }
            }
            done.endpoints = mine.len();
            store.delete_node(node).await?;
        }
        Err(e) => done.etcd = Some(format!("{e:#}")),
    }
    let host = Netlink::new()?;
    for name in host.names().await? {
        if ifnames::is_our_interface(&name) && host.delete(&name).await? {
            done.interfaces.push(name);
        }
    }
    // The routes to containers went with the bridges; the NAT table is left to remove.
    crate::syncs::egress::remove_table()?;
    pins.remove()?;
    let _ = std::fs::remove_file(&status_file);
    Ok(done)
}
