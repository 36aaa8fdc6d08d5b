//! Frames through the loaded programs (BPF_PROG_TEST_RUN), each answer held against the model.
//! Verdict and output bytes are compared per frame (they come back from the test run); the
//! counters in batches, since reading every counter per frame would cost more than running the
//! frame: the model's predicted moves summed over a batch must equal the map's delta, and on a
//! mismatch the batch is replayed frame by frame to name the frame.
use std::time::{Duration, Instant};

use anyhow::Result;
use overlay_agent::dataplane::Maps;
use overlay_common::{Counter, Flood, GroupVteps, IpKey, programs, vtep};

use super::{
    generate,
    model::{
        CLUSTER_ONLY_PORT, FLOOD_PEERS, FLOOD_VTEPS, Flooding, GROUP_MEMBERS, GROUP_WITH_MEMBER,
        Outcome, REFUSED, World, hex,
    },
};
use crate::{
    fixture::{Node, Verdict},
    lab::{Hook, Lab, NEXT_HOP_MAC, OTHER_VNI, PORT, REMOTE_VTEP, REMOTE_VTEP6, VNI, mac_str},
};

/// A run of one lab.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Frame indices `first..first + frames`.
    pub first: u64,
    pub frames: u64,
    pub ipv6_underlay: bool,
    /// Frames between two counter reads.
    pub batch: usize,
}

/// One frame on which the programs and the model disagree, with what it takes to see it again.
#[derive(Clone, Debug)]
pub struct Disagreement {
    pub seed: u64,
    pub index: u64,
    pub ipv6_underlay: bool,
    pub hook: String,
    pub frame: Vec<u8>,
    pub model: String,
    pub program: String,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "disagreement: frame {} of seed {:#x} ({} underlay), {}:",
            self.index,
            self.seed,
            if self.ipv6_underlay { "IPv6" } else { "IPv4" },
            self.hook
        )?;
        writeln!(f, "  frame   {}", hex(&self.frame))?;
        writeln!(f, "  model   {}", self.model)?;
        write!(f, "  program {}", self.program)
    }
}

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub frames: u64,
    /// Frames per outcome, by counter index.
    pub outcomes: Vec<u64>,
    /// Frames BPF_PROG_TEST_RUN refused to run (see model.rs).
    pub refused: u64,
    /// What the counters that are not outcomes moved by (IGMP joins, ...), by counter index.
    pub side: Vec<u64>,
    pub disagreements: Vec<Disagreement>,
    /// Disagreements beyond those kept.
    pub more: u64,
    pub elapsed: Duration,
}

/// Disagreements kept with their frames (the rest are counted).
const KEEP: usize = 20;

impl Summary {
    fn note(&mut self, d: Disagreement) {
        if self.disagreements.len() < KEEP {
            self.disagreements.push(d);
        } else {
            self.more += 1;
        }
    }

    pub fn disagreed(&self) -> u64 {
        self.disagreements.len() as u64 + self.more
    }

    pub fn add(&mut self, other: &Summary) {
        self.frames += other.frames;
        self.refused += other.refused;
        self.outcomes.resize(Counter::ALL.len(), 0);
        self.side.resize(Counter::ALL.len(), 0);
        for (a, b) in self.outcomes.iter_mut().zip(&other.outcomes) {
            *a += b;
        }
        for (a, b) in self.side.iter_mut().zip(&other.side) {
            *a += b;
        }
        for d in &other.disagreements {
            self.note(d.clone());
        }
        self.more += other.more;
        self.elapsed += other.elapsed;
    }

    /// Frames per outcome, most frequent first.
    pub fn table(&self) -> String {
        let mut rows: Vec<(Counter, u64)> = Counter::ALL
            .iter()
            .zip(&self.outcomes)
            .filter(|(_, n)| **n != 0)
            .map(|(c, n)| (*c, *n))
            .collect();
        rows.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let mut t: String = rows
            .iter()
            .map(|(c, n)| format!("  {:<22} {n:>10}\n", c.name()))
            .collect();
        t += &format!("  {:<22} {:>10}\n", "(refused by test_run)", self.refused);
        t += "  and, not outcomes:";
        for (c, n) in Counter::ALL.iter().zip(&self.side) {
            if !c.is_outcome() {
                t += &format!(" {} {n}", c.name());
            }
        }
        t + "\n"
    }
}

/// Runs `opts.frames` frames through a fresh lab; `progress` is called after every batch.
pub fn run(opts: &Options, mut progress: impl FnMut(&Summary) + Send) -> Result<Summary> {
    let label = if opts.ipv6_underlay { "fz6" } else { "fz4" };
    let (mut lab, world) = lab(label, opts.ipv6_underlay)?;
    let maps = lab.node.maps();
    let Lab { ns, node, .. } = &mut lab;
    ns.enter(|| {
        let mut fuzz = Fuzz {
            world,
            node,
            maps: &maps,
            opts,
            summary: Summary {
                outcomes: vec![0; Counter::ALL.len()],
                side: vec![0; Counter::ALL.len()],
                ..Summary::default()
            },
        };
        let started = Instant::now();
        let mut index = opts.first;
        let end = opts.first + opts.frames;
        while index < end {
            let n = (end - index).min(opts.batch as u64);
            fuzz.batch(index, n)?;
            index += n;
            fuzz.summary.elapsed = started.elapsed();
            progress(&fuzz.summary);
        }
        Ok(fuzz.summary)
    })
}

/// Builds frame `index` of the run, and says what the model and the program make of it. The
/// frames before it in its lab's run go through both first: IGMP snooping's state depends on
/// them.
pub fn show(opts: &Options, index: u64) -> Result<String> {
    let (mut lab, mut world) = lab("fzs", opts.ipv6_underlay)?;
    let maps = lab.node.maps();
    let Lab { ns, node, .. } = &mut lab;
    ns.enter(|| {
        let mut run = |i: u64| {
            let (hook, frame) = generate::frame(&world, opts.seed, i);
            let want = world.predict(hook, &frame);
            let before = maps.counters()?;
            let got = send(node, &world, hook, &frame)?;
            let moved = moved(&before, &maps.counters()?);
            anyhow::Ok((hook, frame, want, got, moved))
        };
        for i in opts.first..index {
            run(i)?;
        }
        let (hook, frame, want, got, moved) = run(index)?;
        let verdict = want.check(&frame, got.code, &got.frame);
        Ok(format!(
            "frame {index} of seed {:#x}, {}:\n  frame   {}\n  model   {want}\n  program {}, counters {moved}, frame {}\n  {}",
            opts.seed,
            world.hook_name(hook),
            hex(&frame),
            super::model::code_name(got.code),
            hex(&got.frame),
            match verdict {
                Ok(()) => "they agree".to_string(),
                Err(e) => format!("they disagree: {e}"),
            }
        ))
    })
}

/// The lab over an IPv4 or IPv6 underlay, with the FLOOD entries the model knows
/// ([`Flooding`]), and the model of its maps.
fn lab(label: &str, ipv6_underlay: bool) -> Result<(Lab, World)> {
    let lab = if ipv6_underlay {
        Lab::new_ipv6_underlay(label)
    } else {
        Lab::new(label)
    };
    // VNI 42's bridge, its sending device (as the agent's GRO helper: collect_md), and two
    // more VTEPs (x.3, a legacy peer, and x.4) whose neighbours are known, so every copy is
    // sent.
    let others: Vec<[u8; 16]> = [3u8, 4]
        .iter()
        .map(|&n| {
            if ipv6_underlay {
                let mut a = REMOTE_VTEP6;
                a[15] = n;
                a
            } else {
                vtep::from_v4([10, 0, 0, n])
            }
        })
        .collect();
    let remote = if ipv6_underlay {
        REMOTE_VTEP6
    } else {
        vtep::from_v4(REMOTE_VTEP)
    };
    let neighbours: String = others
        .iter()
        .map(|a| {
            let ip = if ipv6_underlay {
                std::net::IpAddr::from(*a)
            } else {
                std::net::IpAddr::from(vtep::v4(a))
            };
            format!(
                " && ip neigh add {ip} lladdr {} dev ul0 nud permanent",
                mac_str(NEXT_HOP_MAC)
            )
        })
        .collect();
    lab.ns.run(&format!(
        "ip link add ovbr42 type bridge && \
         ip link add ovgro type vxlan dstport {PORT} external && ip link set ovgro up\
         {neighbours}"
    ))?;
    let flooding = Flooding {
        bridge42: lab.ns.ifindex("ovbr42")?,
        tunnel42: lab.ns.ifindex("ovgro")?,
    };
    let mut maps = lab.node.maps();
    let none = Flood::default();
    let mut vteps = none.vteps;
    // The legacy peer first.
    (vteps[0], vteps[1], vteps[2]) = (others[0], remote, others[1]);
    let mut members = GroupVteps::default();
    members.vteps[0] = remote;
    members.count = GROUP_MEMBERS as u32;
    maps.tables_mut().mcast.insert(
        IpKey {
            vni: VNI,
            ip: GROUP_WITH_MEMBER,
        },
        members,
        0,
    )?;
    let entries = [
        (
            VNI,
            Flood {
                bridge: flooding.bridge42,
                tunnel: flooding.tunnel42,
                count: FLOOD_VTEPS as u32,
                peers: FLOOD_PEERS as u32,
                vteps,
                ..none
            },
        ),
        (
            OTHER_VNI,
            Flood {
                internal: 1,
                ..none
            },
        ),
    ];
    for (vni, flood) in entries {
        maps.tables_mut().flood.insert(vni, flood, 0)?;
    }
    // A port of the cluster this node serves no network on.
    maps.tables_mut()
        .cluster_ports
        .insert(u32::from(CLUSTER_ONLY_PORT), 1, 0)?;
    let world = World::of(&lab, flooding);
    Ok((lab, world))
}

/// Runs `frame` through the program at `hook`; a frame BPF_PROG_TEST_RUN refuses comes back
/// as [`REFUSED`].
fn send(node: &mut Node, world: &World, hook: Hook, frame: &[u8]) -> Result<Verdict> {
    let (program, ifindex) = match hook {
        Hook::Container(i) => (programs::FROM_CONTAINER, i),
        Hook::Underlay => (programs::FROM_UNDERLAY, world.underlay),
    };
    match node.run(program, ifindex, frame) {
        Ok(v) => Ok(v),
        Err(e) if refused(&e) => Ok(Verdict {
            code: REFUSED,
            frame: frame.to_vec(),
        }),
        Err(e) => Err(e.context(format!("running {}", hex(frame)))),
    }
}

struct Fuzz<'a> {
    world: World,
    node: &'a mut Node,
    maps: &'a Maps,
    opts: &'a Options,
    summary: Summary,
}

impl Fuzz<'_> {
    fn batch(&mut self, first: u64, n: u64) -> Result<()> {
        let before = self.maps.counters()?;
        let mut want = vec![0u64; Counter::ALL.len()];
        for index in first..first + n {
            let (_, _, outcome) = self.one(index, true)?;
            for (c, k) in outcome.counts() {
                want[c as usize] += k;
                self.summary.side[c as usize] += k;
            }
            if let Some(c) = outcome.counter {
                self.summary.outcomes[c as usize] += 1;
            } else {
                self.summary.refused += 1;
            }
            self.summary.frames += 1;
        }
        if delta(&before, &self.maps.counters()?) != want {
            self.replay(first, n)?;
        }
        Ok(())
    }

    /// Runs frame `index`, checks verdict and bytes (if `check`: a replay has checked them
    /// already); the model's outcome.
    fn one(&mut self, index: u64, check: bool) -> Result<(Hook, Vec<u8>, Outcome)> {
        let (hook, frame) = generate::frame(&self.world, self.opts.seed, index);
        let outcome = self.world.predict(hook, &frame);
        let got = send(self.node, &self.world, hook, &frame)?;
        if !check {
            return Ok((hook, frame, outcome));
        }
        if let Err(e) = outcome.check(&frame, got.code, &got.frame) {
            let program = format!(
                "{}: {e}; its frame {}",
                super::model::code_name(got.code),
                hex(&got.frame)
            );
            self.disagree(index, hook, &frame, &outcome, program);
        }
        Ok((hook, frame, outcome))
    }

    /// The batch again, one counter read per frame, to name the frames whose counters differ.
    fn replay(&mut self, first: u64, n: u64) -> Result<()> {
        let mut found = false;
        for index in first..first + n {
            let before = self.maps.counters()?;
            let (hook, frame, outcome) = self.one(index, false)?;
            let after = self.maps.counters()?;
            let mut want = vec![0u64; Counter::ALL.len()];
            for (c, k) in outcome.counts() {
                want[c as usize] += k;
            }
            if delta(&before, &after) != want {
                found = true;
                let program = format!("counters moved: {}", moved(&before, &after));
                self.disagree(index, hook, &frame, &outcome, program);
            }
        }
        if !found {
            // Counted once, never lost: the batch moved what no single frame does again.
            self.summary.note(Disagreement {
                seed: self.opts.seed,
                index: first,
                ipv6_underlay: self.opts.ipv6_underlay,
                hook: format!("the batch of {n} frames from here"),
                frame: vec![],
                model: "counters as predicted frame by frame".into(),
                program: "its counters differed as a batch, not when replayed".into(),
            });
        }
        Ok(())
    }

    fn disagree(&mut self, index: u64, hook: Hook, frame: &[u8], model: &Outcome, program: String) {
        let d = Disagreement {
            seed: self.opts.seed,
            index,
            ipv6_underlay: self.opts.ipv6_underlay,
            hook: self.world.hook_name(hook),
            frame: frame.to_vec(),
            model: model.to_string(),
            program,
        };
        self.summary.note(d);
    }
}

/// Whether BPF_PROG_TEST_RUN refused the frame (EINVAL) rather than running it.
fn refused(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.raw_os_error() == Some(libc::EINVAL))
}

/// How much each counter moved between two reads.
fn delta(before: &[(Counter, u64)], after: &[(Counter, u64)]) -> Vec<u64> {
    before
        .iter()
        .zip(after)
        .map(|((_, b), (_, a))| a - b)
        .collect()
}

/// The counters that moved between two reads, as `name+n`.
fn moved(before: &[(Counter, u64)], after: &[(Counter, u64)]) -> String {
    let moved: Vec<String> = before
        .iter()
        .zip(after)
        .filter(|((_, b), (_, a))| a != b)
        .map(|((c, b), (_, a))| format!("{}+{}", c.name(), a - b))
        .collect();
    moved.join(" ")
}
