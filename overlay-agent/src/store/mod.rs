//! etcd: the single source of truth. This is the only module that speaks etcd-client; the
//! rest of the agent sees typed records (see [`schema`]) and a few transactions that keep
//! names, VNIs, slices and addresses unique even when several nodes act at the same moment.
pub mod health;
pub mod history;
pub mod members;
mod nodes;
pub mod replay;
pub mod roles;
pub mod schema;
pub mod services;
pub mod transient;
pub mod watch;
pub mod writes;

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper, Txn,
    TxnOp, WatchOptions,
};
use members::{Attempt, BOUND, MemberState, Members, PER_TRY};
use schema::{Endpoint, EndpointRecord, Keys, NameRecord, Network, NetworkRecord, SliceRecord};

use crate::shared::ipam::Cidr;
// What a listing and a watch hand out are etcd's own records; the daemon reads them through
// these names, so no code outside store/ names the etcd client.
pub use etcd_client::{EventType, KeyValue, WatchResponse};
pub use watch::Watch;
use writes::Write;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";
/// One page of a listing may take a little longer than a plain request.
const PAGE_TRY: Duration = Duration::from_secs(3);

/// etcd-client's errors print the whole tonic/hyper chain on one long line; people need the
/// gist: the gRPC message and the root cause ("tcp connect error: Connection refused").
pub fn brief(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let mut cause = std::error::Error::source(status);
            let mut root = None;
            while let Some(c) = cause {
                root = Some(c.to_string());
                cause = c.source();
            }
            match root {
                Some(root) if !status.message().contains(&root) => {
                    format!("{}: {root}", status.message())
                }
                _ => status.message().to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// How to reach etcd: where, under which key prefix, and as whom. The agent writes it into its
/// status (paths, never a password), so that a runtime plugin on the node reaches etcd as the
/// agent does.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Etcd {
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// The CA that signed etcd's certificate (https:// endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacert: Option<std::path::PathBuf>,
    /// This client's certificate and key (etcd's --client-cert-auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
    /// etcd's own authentication: a user, with the password read from `password_file` or the
    /// environment (`OVERLAY_ETCD_PASSWORD`), never from the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<std::path::PathBuf>,
}

/// The environment variable a password may come from instead of a file.
pub const PASSWORD_ENV: &str = "OVERLAY_ETCD_PASSWORD";

impl Etcd {
    /// Plaintext, no user: a test's or a lab's etcd.
    pub fn plain(endpoints: &[String], prefix: &str) -> Self {
        Self {
            endpoints: endpoints.to_vec(),
            prefix: prefix.to_string(),
            ..Default::default()
        }
    }

    /// The client options these settings mean; an unreadable file or a half-given pair is
    /// one line naming the file or the flag.
    fn options(&self) -> Result<ConnectOptions> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            // HTTP/2 pings after 5 s without a read: a connection to a dead server fails
            // within seconds instead of hanging (the watch and the lease keepalive notice a
            // hung member sooner themselves). Not more often: etcd answers pings closer than
            // its --grpc-keepalive-min-time (5 s) with no data between by closing the
            // connection ("too_many_pings"), and an idle watch's connection now carries only
            // its lease's keepalives (store::watch).
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let read = |what: &str, path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
        };
        let tls_wanted = self.cacert.is_some() || self.cert.is_some() || self.key.is_some();
        let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if tls_wanted || https {
            if tls_wanted && !https {
                bail!(
                    "etcd TLS options given but the endpoints are not https:// ({})",
                    self.endpoints.join(",")
                );
            }
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.cacert {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(
                    "the etcd CA certificate (--etcd-cacert)",
                    ca,
                )?));
            }
            match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(
                        read("the etcd client certificate (--etcd-cert)", cert)?,
                        read("the etcd client key (--etcd-key)", key)?,
                    ));
                }
                (None, None) => {}
                _ => bail!("--etcd-cert and --etcd-key go together: give both or neither"),
            }
            options = options.with_tls(tls);
        }
        if let Some(user) = &self.user {
            let password = match &self.password_file {
                Some(path) => String::from_utf8(read("the etcd password file", path)?)
                    .context("the etcd password file is not UTF-8")?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
                None => std::env::var(PASSWORD_ENV).map_err(|_| {
                    anyhow!(
                        "etcd user {user} needs a password: --etcd-password-file or {PASSWORD_ENV}"
                    )
                })?,
            };
            options = options.with_user(user.clone(), password);
        }
        Ok(options)
    }

    /// What a TLS failure means, in words, from rustls' terse ones.
    fn why_tls(&self, error: &str) -> String {
        let cert = |c: &Option<std::path::PathBuf>| {
            c.as_ref()
                .map_or("(none)".to_string(), |p| p.display().to_string())
        };
        if error.contains("UnknownIssuer") {
            format!(
                " (etcd's certificate is not signed by the CA {})",
                cert(&self.cacert)
            )
        } else if error.contains("Expired") {
            " (a certificate has expired)".into()
        } else if error.contains("NotValidForName") {
            " (etcd's certificate does not name the address used to reach it)".into()
        } else if self.endpoints.iter().any(|e| e.starts_with("https://"))
            && [
                "BadCertificate",
                "UnknownCA",
                "CertificateRequired",
                "connection closed",
                "broken pipe",
            ]
            .iter()
            .any(|s| error.contains(s))
        {
            // TLS 1.3: the client learns of a refused certificate after its handshake, as an
            // alert or as a closed connection, whichever arrives first.
            match &self.cert {
                None => " (etcd ended the TLS handshake: it wants a client certificate, --etcd-cert and --etcd-key)".into(),
                Some(c) => format!(
                    " (etcd refused the client certificate {}: not signed by a CA it trusts, or expired)",
                    c.display()
                ),
            }
        } else {
            String::new()
        }
    }

    /// What the TLS settings are, for an error that must say which certificate failed.
    fn describe_tls(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ca) = &self.cacert {
            parts.push(format!("CA {}", ca.display()));
        }
        if let Some(cert) = &self.cert {
            parts.push(format!("client certificate {}", cert.display()));
        }
        if let Some(user) = &self.user {
            parts.push(format!("user {user}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" (with {})", parts.join(", "))
        }
    }
}

#[derive(Clone)]
pub struct Store {
    members: Arc<Members>,
    keys: Keys,
    /// How long one request may try, over all members.
    bound: Duration,
    /// The last record this client put under a lease, and the revision etcd put it at: a
    /// cluster that no longer has it there lost this client's writes (see
    /// [`Store::lost_writes`]).
    last_put: Arc<std::sync::Mutex<Option<(String, i64)>>>,
}

/// Everything under a prefix, as of one revision.
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
    /// Where the answering cluster's history stood: a cluster rebuilt from a snapshot has
    /// another (see [`history`]).
    pub history: history::History,
}

/// A lease kept alive on one member: send on `keeper`, read the answers on `stream`.
pub struct LeaseStream {
    pub keeper: LeaseKeeper,
    pub stream: LeaseKeepAliveStream,
    /// The member it is on, for [`Store::member_failed`].
    pub member: usize,
}

impl Store {
    /// Connects and checks that some member answers (the clients themselves connect lazily).
    /// Each request tries the members for up to 10 s.
    pub async fn connect(etcd: &Etcd) -> Result<Self> {
        Self::connect_within(etcd, BOUND).await
    }

    /// As [`Store::connect`], each request (this first one too) trying for up to `bound`.
    pub async fn connect_within(etcd: &Etcd, bound: Duration) -> Result<Self> {
        let list = etcd.endpoints.join(",");
        let options = etcd.options()?;
        let how = etcd.describe_tls();
        if etcd.endpoints.is_empty() {
            bail!("no etcd endpoint given");
        }
        let members = Arc::new(Members::new(&etcd.endpoints, options));
        // Every member at once first, so that a hung one costs nothing; then one after
        // another, patiently, while the cluster elects or members come back.
        let started = std::time::Instant::now();
        let raced = members
            .race(PER_TRY.min(bound), |mut c| async move { c.status().await })
            .await;
        if raced.is_err() {
            members
                .call_since(started, PER_TRY, bound, |mut c, _| async move {
                    c.status().await
                })
                .await
                .map_err(|e| anyhow!("etcd unreachable at {list}{how}: {e}{}", etcd.why_tls(&e)))?;
        }
        Ok(Self {
            members,
            keys: Keys::new(&etcd.prefix),
            bound,
            last_put: Arc::default(),
        })
    }

    /// Connects, retrying with exponential backoff (from 0.2 s up to `max_delay`) and saying so
    /// each time.
    pub async fn connect_retrying(etcd: &Etcd, max_delay: Duration) -> Self {
        Self::connect_retrying_within(etcd, max_delay, BOUND).await
    }

    /// As [`Store::connect_retrying`], each request trying for up to `bound`.
    pub async fn connect_retrying_within(
        etcd: &Etcd,
        max_delay: Duration,
        bound: Duration,
    ) -> Self {
        let mut delay = Duration::from_millis(200).min(max_delay);
        loop {
            match Self::connect_within(etcd, bound).await {
                Ok(store) => return store,
                Err(e) => {
                    log::warn!("{e:#}; retrying in {:.1} s", delay.as_secs_f32());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(max_delay);
                }
            }
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn endpoints_url(&self) -> &str {
        self.members.list()
    }

    /// What this client knows of each member (no request made): for status and metrics.
    pub fn member_states(&self) -> Vec<MemberState> {
        self.members.states()
    }

    /// A member's stream (a watch, a lease keepalive) failed or fell silent: pass it over for
    /// a while.
    pub fn member_failed(&self, member: usize, why: &str) {
        self.members.failed(member, why, true);
    }

    /// A member's stream answered (a lease keepalive): it is alive, and a watch on it need
    /// not ask (see [`watch`]).
    pub fn member_heard(&self, member: usize) {
        self.members.note_heard(member);
    }

    /// How many etcd members this client was given.
    /// The lease keepalive's period, for the watches to wait for (see `store::watch`).
    pub fn note_renew_every(&self, period: Duration) {
        self.members.set_renew_every(period);
    }

    pub fn member_count(&self) -> usize {
        self.members.count()
    }

    /// The URL of member `member`.
    pub fn member_url(&self, member: usize) -> &str {
        self.members.url(member)
    }

    /// `op` on the members in turn (see [`members`]), with `what` in its error.
    async fn call<T, F, Fut>(&self, what: &str, per_try: Duration, op: F) -> Result<T>
    where
        F: FnMut(Client, Attempt) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.members
            .call(per_try, self.bound, op)
            .await
            .map_err(|why| anyhow!("etcd at {}: {what}: {why}", self.members.list()))
    }

    /// Every key under `prefix`, and the revision they were read at. Read in pages of
    /// LIST_PAGE keys, all at that one revision: one response of 100,000 endpoints would pass
    /// gRPC's 4 MB message limit.
    pub async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        self.list_at(prefix, 0).await
    }

    /// As [`Store::list`], at an earlier `revision` (0: now); fails once etcd compacted it.
    pub async fn list_at(&self, prefix: &str, at: i64) -> Result<(Vec<KeyValue>, i64)> {
        let listing = self.listing(prefix, at).await?;
        Ok((listing.kvs, listing.revision))
    }

    /// As [`Store::list_at`], with where the answering cluster's history stood.
    pub async fn listing(&self, prefix: &str, at: i64) -> Result<Listing> {
        const LIST_PAGE: i64 = 5000;
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1; // every prefix of ours ends in '/', so this cannot overflow
        }
        let (mut out, mut revision, mut from) = (Vec::new(), at, prefix.as_bytes().to_vec());
        let mut first = None;
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let mut resp = self
                .call(&format!("listing {prefix}"), PAGE_TRY, |mut c, _| {
                    let (from, opts) = (from.clone(), opts.clone());
                    async move { c.get(from, Some(opts)).await }
                })
                .await?;
            if let Some(h) = resp.header() {
                if revision == 0 {
                    revision = h.revision();
                }
                first.get_or_insert(history::History::of(h));
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            if let Some(last) = kvs.last() {
                from = last.key().to_vec();
                from.push(0);
            }
            out.extend(kvs);
            if !more {
                let history = history::History {
                    revision,
                    ..first.unwrap_or_default()
                };
                return Ok(Listing {
                    kvs: out,
                    revision,
                    history,
                });
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_created(key).await?.map(|(v, _)| v))
    }

    /// A value and the revision its key was created at.
    async fn get_created(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let resp = self
            .call(&format!("reading {key}"), PER_TRY, |mut c, _| async move {
                c.get(key, None).await
            })
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.create_revision())))
    }

    /// Runs `write`; true if it was done, by this try or (see [`writes`]) by an earlier one
    /// whose answer was lost.
    async fn write(&self, what: &str, write: Write) -> Result<bool> {
        let txn = write.txn();
        self.call(what, PER_TRY, |mut c, attempt| {
            let (txn, write) = (txn.clone(), &write);
            async move {
                let resp = c.txn(txn).await?;
                let done = write.done(resp.succeeded(), attempt.maybe_applied, &write.seen(&resp));
                if done && !resp.succeeded() {
                    log::info!("{what}: an earlier try whose answer was lost had done it");
                }
                Ok(done)
            }
        })
        .await
    }

    /// Watches everything under the prefix but the digests (`Keys::watched_end`) from
    /// `revision` on, on the first member that takes it (see [`Watch`]).
    pub async fn watch(&self, revision: i64) -> Result<Watch> {
        let opts = WatchOptions::new()
            .with_range(self.keys.watched_end())
            .with_start_revision(revision)
            .with_progress_notify();
        let key = self.keys.all();
        let (stream, member) = self
            .call("starting a watch", PER_TRY, |mut c, attempt| {
                let (key, opts) = (key.clone(), opts.clone());
                async move { Ok((c.watch(key, Some(opts)).await?, attempt.member)) }
            })
            .await?;
        Ok(Watch::new(stream, self.members.clone(), member))
    }

    /// Keeps `lease` alive from the first member that renews it; None: the lease expired (or
    /// this cluster never had it).
    pub async fn keep_alive(&self, lease: i64) -> Result<Option<LeaseStream>> {
        self.call(
            "keeping the lease alive",
            PER_TRY,
            |mut c, attempt| async move {
                match c.lease_keep_alive(lease).await {
                    Ok((keeper, stream)) => Ok(Some(LeaseStream {
                        keeper,
                        stream,
                        member: attempt.member,
                    })),
                    Err(etcd_client::Error::LeaseKeepAliveError(e)) if e.contains("not found") => {
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            },
        )
        .await
    }

    // ---- networks ----

    pub async fn network(&self, name: &str) -> Result<Network> {
        let value = self
            .get(&self.keys.network(name))
            .await?
            .ok_or_else(|| anyhow!("network {name} does not exist"))?;
        schema::decode::<NetworkRecord>(&value)
            .and_then(|r| r.validate(name))
            .with_context(|| format!("network {name} in etcd is invalid"))
    }

    /// Valid networks; invalid ones are logged with their key and skipped.
    pub async fn networks(&self) -> Result<Vec<Network>> {
        let (kvs, _) = self.list(&self.keys.networks()).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                let name = key.strip_prefix(&self.keys.networks())?;
                let parsed =
                    schema::decode::<NetworkRecord>(kv.value()).and_then(|r| r.validate(name));
                parsed.map_err(|e| log::warn!("skipping {key}: {e:#}")).ok()
            })
            .collect())
    }

    /// Creates a network; its name and VNI must both be new.
    pub async fn create_network(&self, net: &Network) -> Result<()> {
        let networks = self.networks().await?;
        if let Some(other) = networks.iter().find(|n| n.vni == net.vni) {
            bail!("VNI {} is already used by network {}", net.vni, other.name);
        }
        if let Some(other) = networks.iter().find(|n| n.subnet.overlaps(&net.subnet)) {
            bail!(
                "subnet {} overlaps network {}'s {}",
                net.subnet,
                other.name,
                other.subnet
            );
        }
        // Refused now rather than at the first node that finds no slice left.
        let nodes = self.list(&self.keys.nodes()).await?.0.len();
        if let Some(why) = crate::shared::ipam::too_few_slices(net.subnet, net.slice_prefix, nodes)
        {
            bail!("network {}: {why}", net.name);
        }
        let key = self.keys.network(&net.name);
        let write = Write {
            when: vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)],
            puts: vec![(key, schema::encode(&net.record()).into_bytes())],
            deletes: Vec::new(),
        };
        if !self.write("creating a network", write).await? {
            bail!("network {} already exists", net.name);
        }
        Ok(())
    }

    /// Removes a network that no endpoint uses any more, and its slices.
    pub async fn delete_network(&self, name: &str) -> Result<()> {
        self.network(name).await?;
        let (eps, _) = self.list(&self.keys.endpoints(name)).await?;
        if !eps.is_empty() {
            bail!(
                "network {name} still has {} endpoint(s); remove them first (overlay-agent endpoint ls)",
                eps.len()
            );
        }
        let (services, _) = self.list(&self.keys.services(name)).await?;
        if !services.is_empty() {
            bail!(
                "network {name} still has {} service(s); remove them first (overlay-agent service ls)",
                services.len()
            );
        }
        let write = Write {
            deletes: vec![
                (self.keys.network(name), false),
                (self.keys.slices(name), true),
            ],
            ..Write::default()
        };
        self.write("removing a network", write).await?;
        Ok(())
    }

    // ---- slices ----

    /// This node's slice of `net`, claiming the first free one if it has none. The claim is a
    /// transaction that succeeds only if nobody holds that slice, so nodes starting together
    /// never share one.
    pub async fn claim_slice(&self, net: &Network, node: &str) -> Result<Cidr> {
        let (kvs, _) = self.list(&self.keys.slices(&net.name)).await?;
        let mut taken = Vec::new();
        for kv in &kvs {
            let key = kv.key_str().unwrap_or_default();
            let Some(slice) = key.rsplit('/').next().and_then(|s| Cidr::from_key(s).ok()) else {
                log::warn!("skipping {key}: not a slice key");
                continue;
            };
            match schema::decode::<SliceRecord>(kv.value()) {
                Ok(rec) if rec.node == node => return Ok(slice),
                Ok(_) => taken.push(slice),
                Err(e) => log::warn!("skipping {key}: {e:#}"),
            }
        }
        for slice in net.subnet.slices(net.slice_prefix) {
            if taken.contains(&slice) {
                continue;
            }
            let key = self.keys.slice(&net.name, slice);
            let record = SliceRecord {
                node: node.to_string(),
            };
            let write = Write {
                when: vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)],
                puts: vec![(key, schema::encode(&record).into_bytes())],
                deletes: Vec::new(),
            };
            if self.write("claiming a subnet slice", write).await? {
                log::info!("node {node} claimed {slice} of network {}", net.name);
                return Ok(slice);
            }
        }
        bail!(
            "network {} has no free /{} slice left for node {node}",
            net.name,
            net.slice_prefix
        )
    }

    // ---- endpoints ----

    /// Valid endpoints of one network or of all; invalid ones are logged and skipped.
    pub async fn endpoints(&self, net: Option<&str>) -> Result<Vec<Endpoint>> {
        let prefix = match net {
            Some(n) => self.keys.endpoints(n),
            None => self.keys.all_endpoints(),
        };
        let (kvs, _) = self.list(&prefix).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                let Some(schema::Key::Endpoint { network, ip }) = self.keys.parse(kv.key()) else {
                    return None;
                };
                schema::decode::<EndpointRecord>(kv.value())
                    .and_then(|r| r.validate(&network, &ip))
                    .map(|ep| Endpoint {
                        created: kv.create_revision(),
                        ..ep
                    })
                    .map_err(|e| log::warn!("skipping {key}: {e:#}"))
                    .ok()
            })
            .collect())
    }

    /// Every address of `net` some endpoint or service VIP holds, valid record or not (a bad
    /// value still holds its key, so the address is not free).
    pub async fn taken_addresses(&self, net: &str) -> Result<Vec<Ipv4Addr>> {
        let mut taken: Vec<Ipv4Addr> = self
            .list(&self.keys.endpoints(net))
            .await?
            .0
            .iter()
            .filter_map(|kv| kv.key_str().ok()?.rsplit('/').next()?.parse().ok())
            .collect();
        taken.extend(self.vip_addresses(net).await?);
        Ok(taken)
    }

    pub async fn endpoint(&self, net: &str, ip: Ipv4Addr) -> Result<Option<Endpoint>> {
        match self.get_created(&self.keys.endpoint(net, ip)).await? {
            Some((v, created)) => Ok(Some(Endpoint {
                created,
                ..schema::decode::<EndpointRecord>(&v)?.validate(net, &ip.to_string())?
            })),
            None => Ok(None),
        }
    }

    /// The endpoint a node knows by `name`.
    pub async fn endpoint_named(&self, node: &str, name: &str) -> Result<Option<Endpoint>> {
        let Some(v) = self.get(&self.keys.name(node, name)).await? else {
            return Ok(None);
        };
        let rec: NameRecord = schema::decode(&v)
            .with_context(|| format!("{} is invalid", self.keys.name(node, name)))?;
        // The address may have changed hands between the two reads.
        Ok(self
            .endpoint(&rec.network, rec.ip)
            .await?
            .filter(|ep| ep.name == name && ep.node() == Some(node)))
    }

    /// Registers an endpoint if its address (and, on a node, its name) is free. Ok(false): the
    /// address was taken first.
    pub async fn create_endpoint(&self, ep: &Endpoint) -> Result<bool> {
        let key = self.keys.endpoint(&ep.network, ep.ip);
        // A service's VIP holds its address as an endpoint does (store/services.rs).
        let mut when = vec![
            Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Compare::create_revision(self.keys.vip(&ep.network, ep.ip), CompareOp::Equal, 0),
        ];
        let mut puts = vec![(key, schema::encode(&ep.record()).into_bytes())];
        if let Some(node) = ep.node() {
            let name_key = self.keys.name(node, &ep.name);
            when.push(Compare::create_revision(
                name_key.clone(),
                CompareOp::Equal,
                0,
            ));
            let rec = NameRecord {
                network: ep.network.clone(),
                ip: ep.ip,
            };
            puts.push((name_key, schema::encode(&rec).into_bytes()));
        }
        let write = Write {
            when,
            puts,
            deletes: Vec::new(),
        };
        if self.write("registering an endpoint", write).await? {
            return Ok(true);
        }
        if let Some(node) = ep.node()
            && self.get(&self.keys.name(node, &ep.name)).await?.is_some()
        {
            bail!("endpoint {} already exists on node {node}", ep.name);
        }
        Ok(false)
    }

    /// Removes `ep` only if its key still holds the endpoint read (same creation revision):
    /// for removals decided from a copy that may be old, which must never take the address's
    /// next owner with it. Ok(false): it had changed or was gone.
    pub async fn delete_endpoint_if_unchanged(&self, ep: &Endpoint) -> Result<bool> {
        let key = self.keys.endpoint(&ep.network, ep.ip);
        let when = vec![Compare::create_revision(
            key.clone(),
            CompareOp::Equal,
            ep.created,
        )];
        let mut deletes = vec![(key, false)];
        if let Some(node) = ep.node() {
            deletes.push((self.keys.name(node, &ep.name), false));
        }
        let write = Write {
            when,
            puts: Vec::new(),
            deletes,
        };
        self.write("removing an endpoint", write).await
    }

    /// Replaces `ep`'s record with `with`'s (same key) only if it still holds the endpoint
    /// read (same creation revision). Ok(false): it had changed or was gone.
    pub async fn update_endpoint_if_unchanged(
        &self,
        ep: &Endpoint,
        with: &Endpoint,
    ) -> Result<bool> {
        let key = self.keys.endpoint(&ep.network, ep.ip);
        let write = Write {
            when: vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                ep.created,
            )],
            puts: vec![(key, schema::encode(&with.record()).into_bytes())],
            deletes: Vec::new(),
        };
        self.write("updating an endpoint", write).await
    }

    pub async fn delete_endpoint(&self, ep: &Endpoint) -> Result<()> {
        let mut deletes = vec![(self.keys.endpoint(&ep.network, ep.ip), false)];
        if let Some(node) = ep.node() {
            deletes.push((self.keys.name(node, &ep.name), false));
        }
        let write = Write {
            deletes,
            ..Write::default()
        };
        self.write("removing an endpoint", write).await?;
        Ok(())
    }

    /// Writes a raw value (tests and repair tools: it bypasses every check). The revision it
    /// was written at.
    pub async fn put_raw(&self, key: &str, value: &str) -> Result<i64> {
        let resp = self
            .call(&format!("writing {key}"), PER_TRY, |mut c, _| async move {
                c.put(key, value, None).await
            })
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Writes many raw values, 100 per transaction (etcd allows 128 operations in one); the
    /// revision of the last.
    pub async fn put_many_raw(&self, kvs: &[(String, String)]) -> Result<i64> {
        let mut revision = 0;
        for chunk in kvs.chunks(100) {
            // Unconditional puts: the same however often they land.
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
                .collect();
            let txn = Txn::new().and_then(ops);
            let resp = self
                .call("writing a batch", PER_TRY, |mut c, _| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await?;
            revision = resp.header().map_or(revision, |h| h.revision());
        }
        Ok(revision)
    }
}
