//! A node's dataplane loaded for one test, under its own pin directory, removed afterwards.
use anyhow::{Context as _, Result};
use aya::programs::{TestRun, TestRunOptions};
use overlay_agent::dataplane::{Dataplane, Maps, PinDir};

pub const TEST_PIN_ROOT: &str = "/sys/fs/bpf/overlay-test";

pub struct Node {
    pub dataplane: Dataplane,
    pins: PinDir,
}

impl Node {
    /// Loads fresh programs and maps for node `name` (unique per test process).
    pub fn load(name: &str) -> Result<Self> {
        let pins = PinDir::new(TEST_PIN_ROOT, name)?;
        pins.remove()?;
        let dataplane = Dataplane::load(pins.clone())?;
        Ok(Self { dataplane, pins })
    }

    pub fn maps(&self) -> Maps {
        self.dataplane.maps().expect("opening the node's maps")
    }

    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    /// Runs `program` once over `frame` with BPF_PROG_TEST_RUN, as if it arrived on `ifindex`
    /// (which must exist in the calling thread's network namespace).
    pub fn run(&mut self, program: &str, ifindex: u32, frame: &[u8]) -> Result<Verdict> {
        self.run_marked(program, ifindex, frame, 0)
    }

    /// As [`Node::run`], with `skb->mark` set to `mark`.
    pub fn run_marked(
        &mut self,
        program: &str,
        ifindex: u32,
        frame: &[u8],
        mark: u32,
    ) -> Result<Verdict> {
        let (code, _, frame) = self.test_run(program, ifindex, frame, mark, 1)?;
        Ok(Verdict { code, frame })
    }

    /// Runs `program` over `frame` `repeat` times in the kernel; the verdict of the last run and
    /// the kernel's average time per run.
    pub fn time(
        &mut self,
        program: &str,
        ifindex: u32,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(i32, std::time::Duration)> {
        let (code, duration, _) = self.test_run(program, ifindex, frame, 0, repeat)?;
        Ok((code, duration))
    }

    fn test_run(
        &mut self,
        program: &str,
        ifindex: u32,
        frame: &[u8],
        mark: u32,
        repeat: u32,
    ) -> Result<(i32, std::time::Duration, Vec<u8>)> {
        let prog = self.dataplane.program(program)?;
        // struct __sk_buff: mark is the u32 at byte 8, ifindex the one at byte 40; every other
        // field stays zero.
        let mut ctx = [0u8; 192];
        ctx[8..12].copy_from_slice(&mark.to_ne_bytes());
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 256];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat,
                ..TestRunOptions::new()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {program}"))?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value as i32, result.duration, out))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.pins.remove();
    }
}

/// What a program did with one frame.
#[derive(Debug)]
pub struct Verdict {
    /// TC_ACT_*: OK 0, SHOT 2, REDIRECT 7.
    pub code: i32,
    pub frame: Vec<u8>,
}

pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_REDIRECT: i32 = 7;
