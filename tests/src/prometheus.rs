//! A real Prometheus (Debian's /usr/bin/prometheus) scraping the agents of a deployment, and a
//! plain HTTP/1.1 GET to read it (and the agents) from inside a namespace.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{deployment::wait_for, netns::Netns};

/// Where Prometheus listens, in the deployment's `wire` namespace (etcd's address).
pub const PROMETHEUS_ADDR: &str = "10.0.0.254:9090";

pub struct Prometheus {
    child: Child,
    wire: String,
    log: std::path::PathBuf,
}

impl Prometheus {
    /// Starts Prometheus in `wire` scraping `targets` (host:port) every second, its
    /// configuration and storage under `dir`; returns once it answers /-/ready.
    pub fn start(wire: &Netns, dir: &Path, targets: &[String]) -> Result<Self> {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("prometheus.yml");
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: overlay\n    static_configs:\n      - targets: [{list}]\n"
            ),
        )?;
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &wire.name, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS_ADDR}"))
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting prometheus (Debian package prometheus)")?;
        let p = Self {
            child,
            wire: wire.name.clone(),
            log,
        };
        wait_for(Duration::from_secs(30), || {
            http_get(wire, PROMETHEUS_ADDR, "/-/ready").is_ok_and(|(code, _)| code == 200)
        })
        .with_context(|| format!("prometheus did not become ready:\n{}", p.log()))?;
        Ok(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The values of an instant query, each with its labels.
    pub fn query(&self, wire: &Netns, expr: &str) -> Result<Vec<(serde_json::Value, f64)>> {
        assert_eq!(wire.name, self.wire);
        let (code, body) = http_get(
            wire,
            PROMETHEUS_ADDR,
            &format!("/api/v1/query?query={}", url_encode(expr)),
        )?;
        if code != 200 {
            bail!("query {expr}: HTTP {code}: {body}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        v["data"]["result"]
            .as_array()
            .ok_or_else(|| anyhow!("query {expr}: no result in {body}"))?
            .iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow!("query {expr}: bad value in {r}"))?;
                Ok((r["metric"].clone(), value))
            })
            .collect()
    }

    /// The one value of an instant query; None if it has no or several series.
    pub fn value(&self, wire: &Netns, expr: &str) -> Option<f64> {
        match self.query(wire, expr).ok()?.as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` from `addr` (host:port) from inside `ns`: (status code, body).
pub fn http_get(ns: &Netns, addr: &str, path: &str) -> Result<(u16, String)> {
    http_get_in(&ns.name, addr, path)
}

/// As [`http_get`], inside the namespace named `netns`.
pub fn http_get_in(netns: &str, addr: &str, path: &str) -> Result<(u16, String)> {
    http_get_accepting(netns, addr, path, None)
}

/// As [`http_get_in`], with an Accept header (`application/openmetrics-text` is what
/// Prometheus sends).
pub fn http_get_accepting(
    netns: &str,
    addr: &str,
    path: &str,
    accept: Option<&str>,
) -> Result<(u16, String)> {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    crate::netns::enter(netns, || {
        let mut s = TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .with_context(|| format!("reading the answer to GET {path} from {addr}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("GET {path}: no header end in {text:?}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("GET {path}: bad status line in {head:?}"))?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)?
        } else {
            body.to_string()
        };
        Ok((code, body))
    })
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("bad chunk in {body:?}"))?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        body = rest[size..].trim_start_matches("\r\n");
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of sample `series` (name and labels exactly as exposed) in a scrape's text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}
