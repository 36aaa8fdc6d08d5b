//! `cargo xtask install` / `uninstall`: the binaries, the CNI plugin, man pages, completions,
//! systemd units and a settings file where the system looks for them, with a manifest of what
//! was written, so uninstall removes exactly that (and a settings file only if nobody changed
//! it).
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// Where things go. Everything but the CNI plugin and the settings lives under the prefix;
/// the units in `<prefix>/lib/systemd/system`, which systemd searches for /usr and /usr/local.
pub struct Layout {
    pub prefix: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub sysconfdir: PathBuf,
}

/// One file to write: its path, its bytes, its mode, and whether it is a setting the user may
/// edit (written only if absent; removed only if unchanged).
struct Item {
    path: PathBuf,
    bytes: Vec<u8>,
    mode: u32,
    setting: bool,
}

const UNITS: [&str; 2] = ["overlay-agent.service", "overlay-docker-plugin.service"];
const MANIFEST_NAME: &str = "install-manifest";

impl Layout {
    fn manifest(&self) -> PathBuf {
        self.prefix.join("share/overlay").join(MANIFEST_NAME)
    }

    fn settings(&self) -> PathBuf {
        self.sysconfdir.join("overlay/agent.env")
    }

    /// Text with the layout's directories in place of `@BINDIR@` and `@SYSCONFDIR@`.
    fn render(&self, template: &str) -> String {
        template
            .replace("@BINDIR@", &self.prefix.join("bin").to_string_lossy())
            .replace("@SYSCONFDIR@", &self.sysconfdir.to_string_lossy())
    }

    /// Everything install writes, built from the binaries in `bin_dir`.
    fn items(&self, bin_dir: &Path) -> Result<Vec<Item>> {
        let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
        let agent = bin_dir.join("overlay-agent");
        let file = |path: PathBuf, bytes: Vec<u8>, mode: u32| Item {
            path,
            bytes,
            mode,
            setting: false,
        };
        let mut items = vec![
            file(self.prefix.join("bin/overlay-agent"), read(&agent)?, 0o755),
            file(
                self.cni_bin_dir.join("overlay"),
                read(&bin_dir.join("overlay-cni"))?,
                0o755,
            ),
        ];
        // Man pages and completions come from the built binary's own clap tree.
        let pages = tempdir("overlay-man")?;
        output(&agent, &["man", &pages.to_string_lossy()])?;
        let mut names: Vec<_> = fs::read_dir(&pages)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let bytes = read(&pages.join(&name))?;
            items.push(file(
                self.prefix.join("share/man/man1").join(name),
                bytes,
                0o644,
            ));
        }
        fs::remove_dir_all(&pages)?;
        for (shell, path) in [
            ("bash", "share/bash-completion/completions/overlay-agent"),
            ("zsh", "share/zsh/site-functions/_overlay-agent"),
            ("fish", "share/fish/vendor_completions.d/overlay-agent.fish"),
        ] {
            let script = output(&agent, &["completions", shell])?;
            items.push(file(self.prefix.join(path), script, 0o644));
        }
        let deploy = util::workspace_root().join("deploy/systemd");
        for unit in UNITS {
            let template = fs::read_to_string(deploy.join(format!("{unit}.in")))?;
            let path = self.prefix.join("lib/systemd/system").join(unit);
            items.push(file(path, self.render(&template).into_bytes(), 0o644));
        }
        items.push(Item {
            path: self.settings(),
            bytes: fs::read(deploy.join("agent.env"))?,
            // It may name credentials' files; only root reads it.
            mode: 0o600,
            setting: true,
        });
        Ok(items)
    }
}

/// Builds (unless `debug`: the debug binaries already built) and installs.
pub fn install(layout: &Layout, debug: bool) -> Result<()> {
    if layout.manifest().exists() {
        util::step("replacing an earlier install")?;
        remove(layout, false)?;
    }
    let profile = if debug {
        "debug"
    } else {
        util::step("building (release)")?;
        util::cargo(&["build", "--release", "-p", "overlay-agent", "--bins"])?;
        "release"
    };
    let bin_dir = util::workspace_root().join("target").join(profile);
    let items = layout.items(&bin_dir)?;
    util::step("installing")?;
    let mut manifest = String::new();
    for item in &items {
        if item.setting && item.path.exists() {
            println!("    kept {} (exists)", item.path.display());
            continue;
        }
        write(&item.path, &item.bytes, item.mode)?;
        println!("    {}", item.path.display());
        manifest += &format!("{}\n", item.path.display());
    }
    write(&layout.manifest(), manifest.as_bytes(), 0o644)?;
    println!(
        "\nSettings: {}. Then: systemctl daemon-reload && systemctl enable --now overlay-agent \
         (and overlay-docker-plugin for Docker). `cargo xtask uninstall` removes what is listed in {}.",
        layout.settings().display(),
        layout.manifest().display()
    );
    Ok(())
}

pub fn uninstall(layout: &Layout) -> Result<()> {
    if !layout.manifest().exists() {
        bail!(
            "nothing installed under {}: no {}",
            layout.prefix.display(),
            layout.manifest().display()
        );
    }
    remove(layout, true)
}

/// Removes what the manifest lists; a settings file only if it is still what install wrote.
fn remove(layout: &Layout, say: bool) -> Result<()> {
    let manifest = fs::read_to_string(layout.manifest())
        .with_context(|| format!("reading {}", layout.manifest().display()))?;
    let template = fs::read(util::workspace_root().join("deploy/systemd/agent.env"))?;
    for line in manifest.lines().filter(|l| !l.is_empty()) {
        let path = Path::new(line);
        if path == layout.settings() && fs::read(path).is_ok_and(|now| now != template) {
            if say {
                println!("    kept {} (changed since install)", path.display());
            }
            continue;
        }
        match fs::remove_file(path) {
            Ok(()) if say => println!("    removed {}", path.display()),
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    fs::remove_file(layout.manifest())?;
    let _ = fs::remove_dir(layout.manifest().parent().unwrap());
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file beside it, so a running binary being
/// replaced is never seen half-written.
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap();
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.new",
        path.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("installing {}", path.display()))
}

fn output(program: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn tempdir(label: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{label}-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}
