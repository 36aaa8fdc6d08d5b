//! What a shell user and a log shipper expect of the binary: `--version` naming the commit it
//! was built from, completions that load in bash, a man page per command, and `--log-format
//! json` giving one JSON object per log line from a running agent.
use std::process::Command;

use overlay_tests::deployment::{Deployment, agent_binary};

fn agent(args: &[&str]) -> String {
    let out = Command::new(agent_binary()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "overlay-agent {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let version = agent(&["--version"]);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert!(
        version.starts_with("overlay-agent ") && version.contains(&format!("({head})")),
        "{version} (HEAD is {head})"
    );
}

#[test]
fn completions_load_in_bash_and_man_pages_cover_every_command() {
    let script = std::env::temp_dir().join(format!("overlay-completion-{}", std::process::id()));
    std::fs::write(&script, agent(&["completions", "bash"])).unwrap();
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p overlay-agent",
            script.display()
        ))
        .output()
        .unwrap();
    std::fs::remove_file(&script).unwrap();
    assert!(
        loaded.status.success()
            && String::from_utf8_lossy(&loaded.stdout).contains("overlay-agent"),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    for shell in ["zsh", "fish"] {
        assert!(agent(&["completions", shell]).contains("overlay-agent"));
    }

    let dir = std::env::temp_dir().join(format!("overlay-man-{}", std::process::id()));
    agent(&["man", dir.to_str().unwrap()]);
    let page = std::fs::read_to_string(dir.join("overlay-agent-network-create.1")).unwrap();
    let top = std::fs::read_to_string(dir.join("overlay-agent.1")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(page.contains(".TH") && page.contains("subnet"), "{page}");
    assert!(
        top.contains("Exit status"),
        "the exit codes are documented:\n{top}"
    );
}

#[test]
fn a_running_agent_logs_one_json_object_per_line() {
    let mut d = Deployment::new("lj", &[true]).unwrap();
    d.hosts[0].run_args = vec!["--log-format".into(), "json".into()];
    d.kill_agent(0);
    // The log file is appended to: what the first agent wrote is text.
    let before = d.hosts[0].log().len();
    d.restart_agent(0).unwrap();
    d.create_network("blue", "10.10.0.0/16", 42).unwrap();
    d.add_container(0, "c1", "blue", None).unwrap();
    let log = d.hosts[0].log();
    let lines: Vec<&str> = log[before..]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!lines.is_empty(), "the agent logged nothing");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        for field in ["ts", "level", "target", "msg"] {
            assert!(v[field].is_string(), "no {field} in {line}");
        }
    }
}
