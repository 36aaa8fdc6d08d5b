//! The nodes' own records: registration under a lease, and what each publishes under it (its
//! map digest, multicast groups, backends' health).
use anyhow::{Result, anyhow};
use etcd_client::{GetOptions, PutOptions};

use super::{
    LeaseStream, Store,
    members::PER_TRY,
    schema::{self, NodeRecord, NodeStateRecord},
    writes::Write,
};

impl Store {
    pub async fn node(&self, node: &str) -> Result<Option<NodeRecord>> {
        match self.get(&self.keys.node(node)).await? {
            Some(v) => Ok(Some(schema::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// How many nodes are registered: a count etcd makes without sending a record, cheap
    /// enough for every node to ask when it registers.
    pub async fn node_count(&self) -> Result<usize> {
        let prefix = self.keys.nodes();
        let resp = self
            .call("counting the nodes", PER_TRY, |mut c, _| {
                let prefix = prefix.clone();
                async move {
                    let opts = GetOptions::new().with_prefix().with_count_only();
                    c.get(prefix, Some(opts)).await
                }
            })
            .await?;
        Ok(resp.count().max(0) as usize)
    }

    /// Every registered node (its lease alive) with a valid record; a bad one is logged with
    /// its key and skipped.
    pub async fn nodes(&self) -> Result<Vec<(String, NodeRecord)>> {
        let (kvs, _) = self.list(&self.keys.nodes()).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                let name = key.strip_prefix(&self.keys.nodes())?;
                schema::decode::<NodeRecord>(kv.value())
                    .and_then(NodeRecord::validate)
                    .map(|rec| (name.to_string(), rec))
                    .map_err(|e| log::warn!("skipping {key}: {e:#}"))
                    .ok()
            })
            .collect())
    }

    /// Puts `nodes/<node>` under a new lease of `ttl` seconds and starts keeping it alive.
    /// A grant retried after a lost answer may leave a lease behind: it expires unused.
    pub async fn register_node(
        &self,
        node: &str,
        record: &NodeRecord,
        ttl: i64,
    ) -> Result<(i64, LeaseStream)> {
        let lease = self
            .call("granting a lease", PER_TRY, |mut c, _| async move {
                c.lease_grant(ttl, None).await
            })
            .await?
            .id();
        self.put_leased("registering the node", self.keys.node(node), record, lease)
            .await?;
        let stream = self
            .keep_alive(lease)
            .await?
            .ok_or_else(|| anyhow!("lease {lease:x} expired as soon as it was granted"))?;
        Ok((lease, stream))
    }

    /// Puts `nodes/<node>` again under its lease, when what it says changed (the underlay MTU).
    pub async fn put_node(&self, node: &str, record: &NodeRecord, lease: i64) -> Result<()> {
        let key = self.keys.node(node);
        self.put_leased("updating the node's record", key, record, lease)
            .await
    }

    /// Publishes what the node's maps hold, under its lease (it goes with the agent).
    pub async fn put_state(&self, node: &str, state: &NodeStateRecord, lease: i64) -> Result<()> {
        let key = self.keys.state(node);
        self.put_leased("publishing the node's map digest", key, state, lease)
            .await
    }

    /// Publishes this node's multicast group memberships under its lease.
    pub async fn put_groups(
        &self,
        node: &str,
        groups: &schema::GroupsRecord,
        lease: i64,
    ) -> Result<()> {
        let key = self.keys.groups(node);
        self.put_leased("publishing the node's multicast groups", key, groups, lease)
            .await
    }

    /// Publishes the failing TCP ports of this node's backends under its lease.
    pub async fn put_health(
        &self,
        node: &str,
        health: &schema::HealthRecord,
        lease: i64,
    ) -> Result<()> {
        let key = self.keys.health(node);
        self.put_leased("publishing the node's backends' health", key, health, lease)
            .await
    }

    /// Every node's health record, by node (for `service ls`); invalid ones are logged and
    /// skipped.
    pub async fn health_records(
        &self,
    ) -> Result<std::collections::BTreeMap<String, schema::HealthRecord>> {
        let (kvs, _) = self.list(&self.keys.all_health()).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                let node = key.rsplit('/').next()?.to_string();
                schema::decode(kv.value())
                    .map_err(|e| log::warn!("skipping {key}: {e:#}"))
                    .ok()
                    .map(|h| (node, h))
            })
            .collect())
    }

    /// A record under `lease`: it goes with the agent that keeps the lease alive.
    async fn put_leased(
        &self,
        what: &str,
        key: String,
        record: &impl serde::Serialize,
        lease: i64,
    ) -> Result<()> {
        // A put is the same however often it lands: retried as it is.
        let value = schema::encode(record);
        let put = self
            .call(what, PER_TRY, |mut c, _| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    let lease = PutOptions::new().with_lease(lease);
                    c.put(key, value, Some(lease)).await
                }
            })
            .await?;
        if let Some(h) = put.header() {
            *self.last_put.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, h.revision()));
        }
        Ok(())
    }

    /// Every node's published map digest; a bad value is logged and skipped.
    pub async fn node_states(&self) -> Result<std::collections::BTreeMap<String, NodeStateRecord>> {
        let (kvs, _) = self.list(&self.keys.states()).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                let node = key.rsplit('/').next()?.to_string();
                schema::decode(kv.value())
                    .map_err(|e| log::warn!("skipping {key}: {e:#}"))
                    .ok()
                    .map(|state| (node, state))
            })
            .collect())
    }

    /// Removes the node's registration and its endpoint names (teardown).
    pub async fn delete_node(&self, node: &str) -> Result<()> {
        let write = Write {
            deletes: vec![(self.keys.node(node), false), (self.keys.names(node), true)],
            ..Write::default()
        };
        self.write("removing the node", write).await?;
        Ok(())
    }
}
