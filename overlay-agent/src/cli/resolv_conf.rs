//! The resolv.conf of a named network namespace, `/etc/netns/<name>/resolv.conf`, which `ip
//! netns exec` (and every tool that enters a namespace the same way) puts over /etc/resolv.conf:
//! `endpoint add` writes it with the network's resolver and the network's name to search, and
//! `endpoint rm` removes what it wrote. A file someone else wrote is left alone. A container on
//! two networks gets both: the file lists which endpoints it was written for, and goes with
//! the last of them.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// The first line of every file we write: what tells ours from anyone else's.
const MARK: &str = "# Written by overlay-agent for the endpoints below; removed with the last.";
/// Each endpoint the file serves: `# endpoint <name> <network> <resolver>`.
const ENTRY: &str = "# endpoint ";
/// glibc reads three nameservers at most (MAXNS).
const MAX_NAMESERVERS: usize = 3;

/// An endpoint the file is written for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub endpoint: String,
    pub network: String,
    pub resolver: Ipv4Addr,
}

/// Where the file of namespace `netns` is, if it is a named one (`ip netns` names: a path such
/// as /proc/PID/ns/net has no such file, and its runtime configures its resolvers itself).
pub fn path(netns: &str) -> Option<PathBuf> {
    crate::store::schema::check_name("netns", netns).ok()?;
    Some(Path::new("/etc/netns").join(netns).join("resolv.conf"))
}

/// The file for `entries` (non-empty).
pub fn render(entries: &[Entry]) -> String {
    let mut text = format!("{MARK}\n");
    for e in entries {
        text += &format!("{ENTRY}{} {} {}\n", e.endpoint, e.network, e.resolver);
    }
    let mut nameservers: Vec<Ipv4Addr> = Vec::new();
    for e in entries {
        if !nameservers.contains(&e.resolver) && nameservers.len() < MAX_NAMESERVERS {
            nameservers.push(e.resolver);
        }
    }
    for ns in nameservers {
        text += &format!("nameserver {ns}\n");
    }
    let mut search: Vec<&str> = Vec::new();
    for e in entries {
        if !search.contains(&e.network.as_str()) {
            search.push(&e.network);
        }
    }
    text += &format!("search {}\n", search.join(" "));
    text
}

/// The entries of a file we wrote; None if someone else wrote it.
pub fn parse(text: &str) -> Option<Vec<Entry>> {
    let mut lines = text.lines();
    if lines.next()? != MARK {
        return None;
    }
    Some(
        lines
            .filter_map(|l| {
                let mut w = l.strip_prefix(ENTRY)?.split_whitespace();
                Some(Entry {
                    endpoint: w.next()?.to_string(),
                    network: w.next()?.to_string(),
                    resolver: w.next()?.parse().ok()?,
                })
            })
            .collect(),
    )
}

/// Adds `entry` to namespace `netns`'s file, making it if there is none. Ok(false): the file
/// is someone else's, left alone; or the namespace is not a named one.
pub fn add(netns: &str, entry: Entry) -> Result<bool> {
    let Some(path) = path(netns) else {
        return Ok(false);
    };
    let mut entries = match std::fs::read_to_string(&path) {
        Ok(text) => match parse(&text) {
            Some(entries) => entries,
            None => return Ok(false),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    entries.retain(|e| e.endpoint != entry.endpoint);
    entries.push(entry);
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    write(&path, &render(&entries))?;
    Ok(true)
}

/// Takes endpoint `endpoint` out of namespace `netns`'s file if we wrote it for it; the file
/// goes with its last endpoint (and its directory, if that is left empty).
pub fn remove(netns: &str, endpoint: &str) -> Result<()> {
    let Some(path) = path(netns) else {
        return Ok(());
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let Some(mut entries) = parse(&text) else {
        return Ok(());
    };
    let before = entries.len();
    entries.retain(|e| e.endpoint != endpoint);
    if entries.len() == before {
        return Ok(());
    }
    if entries.is_empty() {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        // Only if empty: another file there is someone else's.
        let _ = std::fs::remove_dir(path.parent().expect("a file in a directory"));
        return Ok(());
    }
    write(&path, &render(&entries))
}

/// Whole or not at all: a reader never sees half a file.
fn write(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("overlay-tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(endpoint: &str, network: &str, resolver: &str) -> Entry {
        Entry {
            endpoint: endpoint.into(),
            network: network.into(),
            resolver: resolver.parse().unwrap(),
        }
    }

    #[test]
    fn one_network_and_two() {
        let one = [entry("c1", "blue", "10.10.0.1")];
        let text = render(&one);
        assert!(
            text.ends_with("nameserver 10.10.0.1\nsearch blue\n"),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), one);
        let two = [
            entry("c1", "blue", "10.10.0.1"),
            entry("c1r", "red", "10.20.0.1"),
        ];
        let text = render(&two);
        assert!(
            text.ends_with("nameserver 10.10.0.1\nnameserver 10.20.0.1\nsearch blue red\n"),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), two);
    }

    #[test]
    fn someone_elses_file_and_odd_namespaces_are_left_alone() {
        assert_eq!(parse("nameserver 1.1.1.1\n"), None);
        assert_eq!(parse(""), None);
        for odd in ["/proc/1/ns/net", "..", ".", "", "a/b", "../etc"] {
            assert_eq!(path(odd), None, "{odd}");
        }
        assert_eq!(path("c1"), Some(PathBuf::from("/etc/netns/c1/resolv.conf")));
    }
}
