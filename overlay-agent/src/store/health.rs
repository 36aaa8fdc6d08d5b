//! Each etcd member on its own: reachable or why not, leader or not, how far its raft log is
//! behind the leader's. The client the rest of the store uses balances over every endpoint and
//! says nothing of which one answered; `status`, `doctor` and the metrics need each member's
//! own view, so each is asked alone, with a short deadline, all at once: a hung member costs
//! one deadline, not one per member.
use std::{collections::HashMap, time::Duration};

use etcd_client::Client;
use serde::{Deserialize, Serialize};

use super::{Etcd, brief};

/// How long one member may take to answer a probe. A healthy member answers in milliseconds;
/// a hung one never does, and a probe must not hold `status` or `doctor` for long.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// How often the agent probes its members (for its status file and metrics).
pub const PROBE_EVERY: Duration = Duration::from_secs(10);

/// One member as this node saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// As configured (`--etcd`).
    pub endpoint: String,
    pub reachable: bool,
    /// Why not, in brief (one line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// etcd's member ID, in hex as `etcdctl` prints it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// It is the leader (its status names itself).
    pub leader: bool,
    /// The leader's member ID in its view (empty: it knows no leader).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub leader_id: String,
    pub raft_term: u64,
    pub raft_index: u64,
    /// Raft entries it is behind the leader's index (None: the leader was not reachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind: Option<u64>,
    pub db_size: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// Every configured member at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// When (Unix seconds; 0: never probed).
    pub unix: u64,
    pub members: Vec<Member>,
}

impl Probe {
    /// The members that say they lead. More than one reachable leader is a split view (one is
    /// partitioned and has not noticed yet).
    pub fn leaders(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.leader)
    }

    pub fn reachable(&self) -> usize {
        self.members.iter().filter(|m| m.reachable).count()
    }
}

/// Clients kept from one probe to the next, one per member that answered: a prober every 10 s
/// on every node would otherwise connect (and, with a user, authenticate: a token each) every
/// round. A member that failed is connected to afresh next time.
#[derive(Default)]
pub struct Clients(HashMap<String, Client>);

/// Probes every endpoint of `etcd` at once, each alone and within [`PROBE_TIMEOUT`].
pub async fn probe(etcd: &Etcd) -> Probe {
    probe_with(etcd, &mut Clients::default()).await
}

/// [`probe`] with the clients of earlier rounds.
pub async fn probe_with(etcd: &Etcd, clients: &mut Clients) -> Probe {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let asked = etcd.endpoints.iter().map(|e| {
        let kept = clients.0.remove(e);
        member(etcd, e, kept)
    });
    let mut members = Vec::new();
    for (member, client) in futures::future::join_all(asked).await {
        if let Some(client) = client {
            clients.0.insert(member.endpoint.clone(), client);
        }
        members.push(member);
    }
    // Behind whom: the leader's index, as the leader itself reported it.
    let leader_index = members.iter().find(|m| m.leader).map(|m| m.raft_index);
    for m in members.iter_mut().filter(|m| m.reachable) {
        m.behind = leader_index.map(|l| l.saturating_sub(m.raft_index));
    }
    Probe { unix, members }
}

/// One member, through `kept` if an earlier round left a client to it; the client to keep
/// (None when it failed).
async fn member(etcd: &Etcd, endpoint: &str, kept: Option<Client>) -> (Member, Option<Client>) {
    let mut member = Member {
        endpoint: endpoint.to_string(),
        ..Default::default()
    };
    let asked = async {
        let mut client = match kept {
            Some(client) => client,
            None => {
                let options = etcd.options().map_err(|e| format!("{e:#}"))?;
                Client::connect([endpoint], Some(options))
                    .await
                    .map_err(|e| brief(&e))?
            }
        };
        let status = client.status().await.map_err(|e| brief(&e))?;
        Ok::<_, String>((status, client))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
        Err(_) => {
            member.error = Some(format!(
                "no answer within {:.1} s",
                PROBE_TIMEOUT.as_secs_f32()
            ));
            (member, None)
        }
        Ok(Err(e)) => {
            let why = etcd.why_tls(&e);
            member.error = Some(crate::shared::text::one_line(&format!("{e}{why}")));
            (member, None)
        }
        Ok(Ok((status, client))) => {
            let id = status.header().map_or(0, |h| h.member_id());
            member.reachable = true;
            member.id = format!("{id:x}");
            member.leader = id != 0 && status.leader() == id;
            member.leader_id = match status.leader() {
                0 => String::new(),
                l => format!("{l:x}"),
            };
            member.raft_term = status.raft_term();
            member.raft_index = status.raft_index();
            member.db_size = status.db_size();
            member.version = status.version().to_string();
            (member, Some(client))
        }
    }
}

/// Probes every [`PROBE_EVERY`] from a task of its own, handing each probe to `seen`; never
/// waits on anything but its own deadlines, so nothing else ever waits on it.
pub fn spawn_prober(etcd: Etcd, seen: impl Fn(Probe) + Send + Sync + 'static) {
    tokio::spawn(async move {
        let mut clients = Clients::default();
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            seen(probe_with(&etcd, &mut clients).await);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_endpoint_is_unreachable_in_one_line_within_the_deadline() {
        // Nothing listens on port 1 of the loopback: refused at once.
        let etcd = Etcd::plain(&["http://127.0.0.1:1".to_string()], "/overlay");
        let started = std::time::Instant::now();
        let p = probe(&etcd).await;
        assert!(started.elapsed() < PROBE_TIMEOUT + Duration::from_millis(500));
        let [m] = p.members.as_slice() else {
            panic!("{p:?}")
        };
        assert!(!m.reachable && !m.leader && m.behind.is_none(), "{m:?}");
        let e = m.error.as_deref().unwrap();
        assert!(!e.is_empty() && !e.contains('\n'), "{e:?}");
        assert_eq!(p.leaders().count(), 0);
        assert_eq!(p.reachable(), 0);
        // Nothing kept of a member that did not answer: the next round connects afresh.
        let mut clients = Clients::default();
        probe_with(&etcd, &mut clients).await;
        assert!(clients.0.is_empty());
    }
}
