//! The shape of the house, checked: which group of `src/` may use which (docs/contributing.md),
//! and which crate each adapter alone may name. Read from the sources, so a new arrow that runs
//! back up, or an aya call outside `dataplane/`, fails here with the file that made it.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Each group and the groups below it that it may use. `main.rs`, `bin/` and `lib.rs` may use
/// anything; a group may always use itself.
const MAY_USE: &[(&str, &[&str])] = &[
    ("shared", &[]),
    ("dataplane", &["shared"]),
    ("netlink", &["shared"]),
    ("store", &["shared"]),
    ("status", &["store", "shared"]),
    ("model", &["store", "dataplane", "netlink", "shared"]),
    (
        "syncs",
        &["model", "store", "dataplane", "netlink", "shared"],
    ),
    (
        "daemon",
        &[
            "syncs",
            "model",
            "status",
            "store",
            "dataplane",
            "netlink",
            "shared",
        ],
    ),
    (
        "cli",
        &[
            "syncs",
            "model",
            "status",
            "store",
            "dataplane",
            "netlink",
            "shared",
        ],
    ),
    (
        "runtimes",
        &[
            "cli",
            "model",
            "status",
            "store",
            "dataplane",
            "netlink",
            "shared",
        ],
    ),
];

/// A crate only one group may name: the adapter that owns it.
const ADAPTERS: &[(&str, &str)] = &[
    ("aya", "dataplane"),
    ("rtnetlink", "netlink"),
    ("netlink_packet_route", "netlink"),
    ("etcd_client", "store"),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file of src/: its path, its group, and its code without comments.
fn sources_with_groups() -> Vec<(PathBuf, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let from = group(&src, &file);
            let code = code(&fs::read_to_string(&file).unwrap());
            (file, from, code)
        })
        .collect()
}

/// The group a file belongs to: its first directory under src/, or its own name.
fn group(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap();
    first.trim_end_matches(".rs").to_string()
}

/// The code of a file without its comments (doc links may point anywhere).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate's top-level modules a piece of code refers to: `crate::x`, and each item of a
/// `crate::{x, y::z}` group.
fn uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.insert(ident(&item));
        } else {
            found.insert(ident(rest));
        }
    }
    found.remove("");
    found.remove("self");
    found
}

#[test]
fn every_group_uses_only_the_groups_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = MAY_USE.iter().copied().collect();
    let mut wrong = Vec::new();
    for (file, from, code) in sources_with_groups() {
        if ["main", "lib", "bin", "house"].contains(&from.as_str()) {
            continue;
        }
        let Some(may) = allowed.get(from.as_str()) else {
            wrong.push(format!(
                "{}: group {from} is not in house.rs's table; add it where it belongs",
                file.display()
            ));
            continue;
        };
        for to in uses(&code) {
            if to != from && !may.contains(&to.as_str()) {
                wrong.push(format!("{}: {from} uses {to}", file.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn each_outside_crate_is_named_by_its_adapter_only() {
    let mut wrong = Vec::new();
    for (file, from, code) in sources_with_groups() {
        for (krate, owner) in ADAPTERS {
            let named =
                code.contains(&format!("{krate}::")) || code.contains(&format!("use {krate}"));
            if named && from != *owner && from != "house" {
                wrong.push(format!(
                    "{}: names {krate}, which only {owner}/ may",
                    file.display()
                ));
            }
        }
        // The maps' aya handles are dataplane/'s; tests elsewhere reach them on purpose only.
        if code.contains("tables_mut(") && from != "dataplane" && from != "house" {
            wrong.push(format!("{}: reaches into Maps' tables", file.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "crates outside their adapter:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reader_of_uses_sees_groups_and_paths() {
    let code = "use crate::{shared::{ipam::Cidr, net::Mac}, store::Store};\nlet x = crate::model::desired::f();";
    let found: Vec<_> = uses(code).into_iter().collect();
    assert_eq!(found, ["model", "shared", "store"]);
}
