//! Certificates made on the spot with openssl, for an etcd that requires TLS and client
//! certificates: a CA, etcd's server certificate for its address, and client certificates
//! (CN = the etcd user they stand for).
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::netns::sh;

/// A CA in `dir` (`ca.pem`, `ca.key`) and a server certificate for `ip` (`server.pem`,
/// `server.key`).
pub fn make_ca_and_server(dir: &Path, ip: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let d = dir.display();
    sh(&format!(
        "cd {d} && \
         openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=overlay-test-ca 2>/dev/null && \
         printf 'subjectAltName=IP:{ip}\\nextendedKeyUsage=serverAuth,clientAuth\\n' > server.ext && \
         openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=etcd 2>/dev/null && \
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext 2>/dev/null"
    ))
    .context("making a CA and etcd's certificate (openssl)")?;
    Ok(())
}

/// A client certificate for `who` (`<who>.pem`, `<who>.key`) signed by `ca` (`<ca>.pem`).
pub fn make_client(dir: &Path, ca: &str, who: &str) -> Result<(PathBuf, PathBuf)> {
    make_client_valid_for(dir, ca, who, 2)
}

/// The same, valid for `days` from now; -1: it expired yesterday.
pub fn make_client_valid_for(
    dir: &Path,
    ca: &str,
    who: &str,
    days: i32,
) -> Result<(PathBuf, PathBuf)> {
    let d = dir.display();
    sh(&format!(
        "cd {d} && printf 'extendedKeyUsage=clientAuth\\n' > client.ext && \
         openssl req -newkey rsa:2048 -nodes -keyout {who}.key -out {who}.csr -subj /CN={who} 2>/dev/null && \
         openssl x509 -req -in {who}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -out {who}.pem -days {days} -extfile client.ext 2>/dev/null"
    ))
    .with_context(|| format!("making a client certificate for {who} (openssl)"))?;
    Ok((
        dir.join(format!("{who}.pem")),
        dir.join(format!("{who}.key")),
    ))
}

/// Another CA (`<name>.pem`, `<name>.key`): one etcd does not trust.
pub fn make_other_ca(dir: &Path, name: &str) -> Result<()> {
    let d = dir.display();
    sh(&format!(
        "cd {d} && openssl req -x509 -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.pem -days 2 -subj /CN={name} 2>/dev/null"
    ))
    .context("making another CA (openssl)")?;
    Ok(())
}
