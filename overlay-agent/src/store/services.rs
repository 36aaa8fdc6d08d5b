//! Services in etcd: `services/<net>/<name>` (the VIP and the ports), `vips/<net>/<ip>` (the
//! VIP held like an endpoint's address, so no container is ever given it), and each backend's
//! membership in its own endpoint record (`"services":["web"]`).
//!
//! A service and its VIP are written in one transaction that also finds the address free of
//! endpoints; an endpoint's registration finds it free of VIPs (`create_endpoint`). So a VIP is
//! unique in its network and never a container's.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use etcd_client::{Compare, CompareOp};
use serde::{Deserialize, Serialize};

use super::{
    Store,
    schema::{self, Network, check_name},
    writes::Write,
};

/// Most ports one service has.
pub const MAX_PORTS: usize = 16;
/// Most services one endpoint is a backend of.
pub const MAX_MEMBERSHIPS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// As the socket hooks see it (IANA number).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => overlay_common::proto::TCP,
            Proto::Udp => overlay_common::proto::UDP,
        }
    }
}

/// One port of a service: `80/tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto.name())
    }
}

fn parse_proto(s: &str, what: &str) -> Result<Proto> {
    match s {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => bail!("{what}: protocol {s:?} is neither tcp nor udp"),
    }
}

fn parse_port(s: &str, what: &str) -> Result<u16> {
    let port: u16 = s
        .parse()
        .map_err(|_| anyhow!("{what}: {s:?} is not a port (1-65535)"))?;
    ensure!(port != 0, "{what}: port 0 is not a port (1-65535)");
    Ok(port)
}

impl FromStr for ServicePort {
    type Err = anyhow::Error;

    /// `PORT/PROTO`, e.g. `80/tcp`, `53/udp`.
    fn from_str(s: &str) -> Result<Self> {
        let what = format!("port {s:?}");
        let (port, proto) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("{what}: write it as PORT/tcp or PORT/udp"))?;
        Ok(Self {
            port: parse_port(port, &what)?,
            proto: parse_proto(proto, &what)?,
        })
    }
}

/// A published port: `8080:80/tcp`, served on every node's underlay address (nodeport.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub published: u16,
    pub target: u16,
    pub proto: Proto,
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}/{}",
            self.published,
            self.target,
            self.proto.name()
        )
    }
}

impl FromStr for Publish {
    type Err = anyhow::Error;

    /// `PUBLISHED:TARGET/PROTO`, e.g. `8080:80/tcp`.
    fn from_str(s: &str) -> Result<Self> {
        let what = format!("published port {s:?}");
        let (ports, proto) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("{what}: write it as PUBLISHED:TARGET/tcp or /udp"))?;
        let (published, target) = ports
            .split_once(':')
            .ok_or_else(|| anyhow!("{what}: write it as PUBLISHED:TARGET/tcp or /udp"))?;
        Ok(Self {
            published: parse_port(published, &what)?,
            target: parse_port(target, &what)?,
            proto: parse_proto(proto, &what)?,
        })
    }
}

/// `services/<net>/<name>` as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<Publish>,
}

/// A service, validated (its VIP against its network only where the network is known:
/// [`Service::check_in`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub network: String,
    pub name: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    pub publish: Vec<Publish>,
}

impl ServiceRecord {
    pub fn validate(self, network: &str, name: &str) -> Result<Service> {
        check_name("network", network)?;
        check_name("service", name)?;
        ensure!(!self.ports.is_empty(), "service {name} has no port");
        ensure!(
            self.ports.len() <= MAX_PORTS,
            "service {name} has {} ports; at most {MAX_PORTS}",
            self.ports.len()
        );
        for (i, p) in self.ports.iter().enumerate() {
            ensure!(
                p.port != 0,
                "service {name}: port 0 is not a port (1-65535)"
            );
            ensure!(
                !self.ports[..i].contains(p),
                "service {name} has port {p} twice"
            );
        }
        ensure!(
            self.publish.len() <= MAX_PORTS,
            "service {name} publishes {} ports; at most {MAX_PORTS}",
            self.publish.len()
        );
        for (i, p) in self.publish.iter().enumerate() {
            ensure!(
                p.published != 0 && p.target != 0,
                "service {name}: port 0 is not a port (1-65535)"
            );
            ensure!(
                self.ports
                    .iter()
                    .any(|s| s.port == p.target && s.proto == p.proto),
                "service {name} publishes {p}, but {}/{} is not one of its ports",
                p.target,
                p.proto.name()
            );
            ensure!(
                !self.publish[..i]
                    .iter()
                    .any(|q| q.published == p.published && q.proto == p.proto),
                "service {name} publishes port {}/{} twice",
                p.published,
                p.proto.name()
            );
        }
        Ok(Service {
            network: network.to_string(),
            name: name.to_string(),
            vip: self.vip,
            ports: self.ports,
            publish: self.publish,
        })
    }
}

impl Service {
    pub fn record(&self) -> ServiceRecord {
        ServiceRecord {
            vip: self.vip,
            ports: self.ports.clone(),
            publish: self.publish.clone(),
        }
    }

    /// The VIP is a host address of its network's subnet and not its gateway.
    pub fn check_in(&self, net: &Network) -> Result<()> {
        check_vip(net, self.vip)
    }
}

/// Whether `vip` can be a VIP of `net`: a host address of its subnet, not its gateway.
pub fn check_vip(net: &Network, vip: Ipv4Addr) -> Result<()> {
    ensure!(
        net.subnet.contains(vip) && vip != net.subnet.network() && vip != net.subnet.broadcast(),
        "VIP {vip} is not a host address of network {}'s subnet {}",
        net.name,
        net.subnet
    );
    ensure!(
        Some(vip) != net.gateway(),
        "VIP {vip} is network {}'s gateway",
        net.name
    );
    Ok(())
}

/// An endpoint record's `services`: names a service may have, at most [`MAX_MEMBERSHIPS`],
/// each once.
pub fn check_memberships(services: Vec<String>) -> Result<Vec<String>> {
    ensure!(
        services.len() <= MAX_MEMBERSHIPS,
        "an endpoint is a backend of {} services; at most {MAX_MEMBERSHIPS}",
        services.len()
    );
    for (i, s) in services.iter().enumerate() {
        check_name("service", s)?;
        ensure!(!services[..i].contains(s), "service {s} is named twice");
    }
    Ok(services)
}

/// `vips/<net>/<ip>`: which service holds the address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipRecord {
    pub service: String,
}

impl Store {
    /// Valid services of one network or of all; invalid ones are logged with their key and
    /// skipped.
    pub async fn services(&self, net: Option<&str>) -> Result<Vec<Service>> {
        let prefix = match net {
            Some(n) => self.keys.services(n),
            None => self.keys.all_services(),
        };
        let (kvs, _) = self.list(&prefix).await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                let Some(schema::Key::Service { network, name }) = self.keys.parse(kv.key()) else {
                    return None;
                };
                schema::decode::<ServiceRecord>(kv.value())
                    .and_then(|r| r.validate(&network, &name))
                    .map_err(|e| log::warn!("skipping {key}: {e:#}"))
                    .ok()
            })
            .collect())
    }

    pub async fn service(&self, net: &str, name: &str) -> Result<Option<Service>> {
        let key = self.keys.service(net, name);
        match self.get(&key).await? {
            Some(v) => Ok(Some(
                schema::decode::<ServiceRecord>(&v)
                    .and_then(|r| r.validate(net, name))
                    .with_context(|| format!("{key} is invalid"))?,
            )),
            None => Ok(None),
        }
    }

    /// Registers a service with its VIP if the name is new and the address is free (of
    /// endpoints and of other VIPs). Ok(false): the address was taken first.
    pub async fn create_service(&self, svc: &Service) -> Result<bool> {
        let key = self.keys.service(&svc.network, &svc.name);
        let vip = self.keys.vip(&svc.network, svc.vip);
        let endpoint = self.keys.endpoint(&svc.network, svc.vip);
        let record = VipRecord {
            service: svc.name.clone(),
        };
        let write = Write {
            when: [&key, &vip, &endpoint]
                .into_iter()
                .map(|k| Compare::create_revision(k.as_str(), CompareOp::Equal, 0))
                .collect(),
            puts: vec![
                (key.clone(), schema::encode(&svc.record()).into_bytes()),
                (vip, schema::encode(&record).into_bytes()),
            ],
            deletes: Vec::new(),
        };
        if self.write("creating a service", write).await? {
            return Ok(true);
        }
        if let Some(there) = self.service(&svc.network, &svc.name).await? {
            // A retry whose first attempt landed, its answer lost: done.
            if there == *svc {
                return Ok(true);
            }
            bail!(
                "service {} already exists in network {} (VIP {})",
                svc.name,
                svc.network,
                there.vip
            );
        }
        Ok(false)
    }

    /// Removes a service and frees its VIP (only if the VIP key is still this service's).
    pub async fn delete_service(&self, net: &str, name: &str) -> Result<Service> {
        let svc = self
            .service(net, name)
            .await?
            .ok_or_else(|| anyhow!("network {net} has no service {name}"))?;
        let mut deletes = vec![(self.keys.service(net, name), false)];
        let vip = self.keys.vip(net, svc.vip);
        let holder = self
            .get(&vip)
            .await?
            .and_then(|v| schema::decode::<VipRecord>(&v).ok());
        if holder.is_some_and(|h| h.service == name) {
            deletes.push((vip, false));
        }
        let write = Write {
            deletes,
            ..Write::default()
        };
        self.write("removing a service", write).await?;
        Ok(svc)
    }

    /// Addresses of `net` that VIPs hold.
    pub async fn vip_addresses(&self, net: &str) -> Result<Vec<Ipv4Addr>> {
        Ok(self
            .list(&self.keys.vips(net))
            .await?
            .0
            .iter()
            .filter_map(|kv| kv.key_str().ok()?.rsplit('/').next()?.parse().ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(json: &str) -> ServiceRecord {
        schema::decode(json.as_bytes()).unwrap()
    }

    #[test]
    fn ports_parse() {
        assert_eq!(
            "80/tcp".parse::<ServicePort>().unwrap(),
            ServicePort {
                port: 80,
                proto: Proto::Tcp
            }
        );
        assert_eq!("53/udp".parse::<ServicePort>().unwrap().proto, Proto::Udp);
        for (bad, says) in [
            ("80", "PORT/tcp"),
            ("0/tcp", "port 0"),
            ("65536/tcp", "not a port"),
            ("80/sctp", "neither tcp nor udp"),
            ("x/tcp", "not a port"),
        ] {
            let err = bad.parse::<ServicePort>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(!err.contains('\n'));
        }
        let p: Publish = "8080:80/tcp".parse().unwrap();
        assert_eq!((p.published, p.target, p.proto), (8080, 80, Proto::Tcp));
        assert!("8080/tcp".parse::<Publish>().is_err());
    }

    #[test]
    fn records_validate() {
        let svc = rec(r#"{"vip":"10.10.255.254","ports":[{"port":80,"proto":"tcp"},{"port":53,"proto":"udp"}]}"#)
            .validate("blue", "web")
            .unwrap();
        assert_eq!(svc.ports.len(), 2);
        assert_eq!(svc.record().validate("blue", "web").unwrap(), svc);
        // The JSON written is the JSON read: no publish key unless there is one.
        assert_eq!(
            schema::encode(&svc.record()),
            r#"{"vip":"10.10.255.254","ports":[{"port":80,"proto":"tcp"},{"port":53,"proto":"udp"}]}"#
        );
        let many: Vec<String> = (1..=17)
            .map(|p| format!(r#"{{"port":{p},"proto":"tcp"}}"#))
            .collect();
        let many = format!(r#"{{"vip":"10.10.0.9","ports":[{}]}}"#, many.join(","));
        for (json, name, says) in [
            (r#"{"vip":"10.10.0.9","ports":[]}"#, "web", "no port"),
            (
                r#"{"vip":"10.10.0.9","ports":[{"port":0,"proto":"tcp"}]}"#,
                "web",
                "port 0",
            ),
            (
                r#"{"vip":"10.10.0.9","ports":[{"port":80,"proto":"tcp"},{"port":80,"proto":"tcp"}]}"#,
                "web",
                "twice",
            ),
            (
                r#"{"vip":"10.10.0.9","ports":[{"port":80,"proto":"tcp"}]}"#,
                "a/b",
                "invalid service name",
            ),
            (&many, "web", "at most 16"),
            (
                r#"{"vip":"10.10.0.9","ports":[{"port":80,"proto":"tcp"}],"publish":[{"published":8080,"target":81,"proto":"tcp"}]}"#,
                "web",
                "81/tcp is not one of its ports",
            ),
            (
                r#"{"vip":"10.10.0.9","ports":[{"port":80,"proto":"tcp"}],"publish":[{"published":8080,"target":80,"proto":"udp"}]}"#,
                "web",
                "80/udp is not one of its ports",
            ),
            (
                r#"{"vip":"10.10.0.9","ports":[{"port":80,"proto":"tcp"}],"publish":[{"published":8080,"target":80,"proto":"tcp"},{"published":8080,"target":80,"proto":"tcp"}]}"#,
                "web",
                "publishes port 8080/tcp twice",
            ),
        ] {
            let err = format!("{:#}", rec(json).validate("blue", name).unwrap_err());
            assert!(err.contains(says), "{json}: {err}");
        }
        for bad in [
            r#"{"vip":"10.10.0","ports":[{"port":80,"proto":"tcp"}]}"#,
            r#"{"vip":"10.10.0.9","ports":[{"port":70000,"proto":"tcp"}]}"#,
            r#"{"vip":"10.10.0.9","ports":[{"port":80,"proto":"sctp"}]}"#,
            r#"{"vip":"10.10.0.9"}"#,
        ] {
            assert!(
                schema::decode::<ServiceRecord>(bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_vip_lies_in_its_subnet_and_is_not_the_gateway() {
        let net = schema::decode::<schema::NetworkRecord>(br#"{"vni":42,"subnet":"10.10.0.0/16"}"#)
            .unwrap()
            .validate("blue")
            .unwrap();
        check_vip(&net, "10.10.255.254".parse().unwrap()).unwrap();
        for (bad, says) in [
            ("10.11.0.5", "not a host address"),
            ("10.10.0.0", "not a host address"),
            ("10.10.255.255", "not a host address"),
            ("10.10.0.1", "gateway"),
        ] {
            let err = check_vip(&net, bad.parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn memberships_validate() {
        check_memberships(vec!["web".into(), "dns".into()]).unwrap();
        assert!(check_memberships(vec!["web".into(), "web".into()]).is_err());
        assert!(check_memberships(vec!["a b".into()]).is_err());
        assert!(check_memberships((0..65).map(|i| format!("s{i}")).collect()).is_err());
    }
}

/// Service records from etcd are outside input: decoding and validating never panics, and
/// every refusal is one line.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::shared::fuzzing::{CASES, input, plausible_string, refused};

    const A_SERVICE: &str = r#"{"vip":"10.10.255.254","ports":[{"port":80,"proto":"tcp"}],"publish":[{"published":8080,"target":80,"proto":"tcp"}]}"#;
    const FIELDS: &[&str] = &[
        "vip",
        "ports",
        "publish",
        "port",
        "proto",
        "published",
        "target",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn service_records(value in input(A_SERVICE, FIELDS), name in plausible_string()) {
            match schema::decode::<ServiceRecord>(&value) {
                Ok(rec) => refused(rec.validate("blue", &name))?,
                Err(e) => crate::shared::fuzzing::one_line(&e)?,
            }
            refused(schema::decode::<VipRecord>(&value))?;
        }
    }
}
