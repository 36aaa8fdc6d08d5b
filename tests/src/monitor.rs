//! `overlay-agent monitor --json` running beside a test: started on a host, its events
//! collected as they come, stopped with SIGINT as a user's Ctrl-C.
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::deployment::{Deployment, wait_for};

pub struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    stdout: JoinHandle<()>,
    stderr: Arc<Mutex<String>>,
}

impl Monitor {
    /// Starts `monitor --json ARGS` on `host` and waits until the programs know it listens.
    pub fn start(d: &Deployment, host: usize, args: &[&str]) -> Result<Self> {
        let mut child = d
            .base_command(host)
            .args(["monitor", "--json"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting overlay-agent monitor")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let sink = lines.clone();
        let stdout = std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("monitor printed a line that is not JSON ({e}): {line}")
                });
                sink.lock().unwrap().push(value);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_sink = stderr.clone();
        let err = BufReader::new(child.stderr.take().expect("piped"));
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let mut s = err_sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut monitor = Self {
            child,
            lines,
            stdout,
            stderr,
        };
        let listening = wait_for(Duration::from_secs(10), || {
            monitor.stderr().contains("listening for")
                || monitor.child.try_wait().ok().flatten().is_some()
        });
        if listening.is_err() || !monitor.stderr().contains("listening for") {
            let _ = monitor.child.kill();
            bail!("monitor did not start: {}", monitor.stderr());
        }
        Ok(monitor)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The objects printed so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Ctrl-C, then everything it printed; Err if it did not exit cleanly.
    pub fn stop(mut self) -> Result<Vec<Value>> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        let stderr = self.stderr();
        self.stdout.join().expect("reader thread");
        if !status.success() {
            bail!("monitor exited with {status}: {stderr}");
        }
        Ok(self.lines.lock().unwrap().clone())
    }
}

/// The events (not the `lost` reports) among `lines`.
pub fn events(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] != "lost").collect()
}

/// The last `lost` report among `lines`: (rate limited, ring full); zeros if none.
pub fn lost(lines: &[Value]) -> (u64, u64) {
    lines
        .iter()
        .rev()
        .find(|l| l["type"] == "lost")
        .map(|l| {
            (
                l["rate_limited"].as_u64().unwrap_or(0),
                l["ring_full"].as_u64().unwrap_or(0),
            )
        })
        .unwrap_or((0, 0))
}
