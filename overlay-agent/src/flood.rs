//! The FLOOD map: for each network, where this node sends and delivers its broadcast and
//! multicast. Derived from what the maps already hold (the network's UDP port, its remote
//! VTEPs), the network's storm limit, and this node's interfaces (the network's bridge, the
//! port's GRO helper, whose collect_md vxlan device sends the copies). Node-local interfaces,
//! so it lives beside MapState, not in it: no other node could compute it, and `doctor
//! --cluster` compares only what any node can.
use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use overlay_common::{Flood, MAX_FLOOD_VTEPS};

use crate::{
    dataplane::{Maps, state::MapState},
    gro,
};

/// A served network's settings FLOOD carries.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// Broadcast and multicast per endpoint per second.
    pub bum_rate: u32,
    pub internal: bool,
}

/// What FLOOD must hold, and the networks with more remote VTEPs than a flood list holds.
pub fn wanted(
    applied: &MapState,
    settings: &BTreeMap<u32, Settings>,
    resolve: &dyn Fn(&str) -> Option<u32>,
) -> (BTreeMap<u32, Flood>, Vec<(u32, usize)>) {
    let mut out = BTreeMap::new();
    let mut overflow = Vec::new();
    for (&vni, &port) in &applied.networks {
        let mut flood = Flood {
            bridge: resolve(&format!("ovbr{vni}")).unwrap_or(0),
            tunnel: resolve(&gro::device(port)).unwrap_or(0),
            rate_pps: settings.get(&vni).map_or(0, |s| s.bum_rate),
            internal: settings.get(&vni).is_some_and(|s| s.internal).into(),
            ..Flood::default()
        };
        // BTreeSet order: sorted by VNI, then VTEP.
        let vteps: Vec<[u8; 4]> = applied
            .vteps
            .iter()
            .filter(|(v, _)| *v == vni)
            .map(|(_, vtep)| *vtep)
            .collect();
        if vteps.len() > MAX_FLOOD_VTEPS {
            overflow.push((vni, vteps.len()));
        }
        for (slot, vtep) in flood.vteps.iter_mut().zip(&vteps) {
            *slot = *vtep;
        }
        flood.count = vteps.len().min(MAX_FLOOD_VTEPS) as u32;
        out.insert(vni, flood);
    }
    (out, overflow)
}

/// Makes FLOOD equal to `wanted`; how many entries it wrote or removed.
pub fn sync(maps: &mut Maps, wanted: &BTreeMap<u32, Flood>) -> Result<usize> {
    let current: BTreeMap<u32, Flood> = maps
        .flood
        .iter()
        .collect::<Result<_, _>>()
        .context("reading FLOOD")?;
    let mut changes = 0;
    for (vni, flood) in wanted {
        if current.get(vni) != Some(flood) {
            maps.flood
                .insert(vni, flood, 0)
                .with_context(|| format!("FLOOD: writing VNI {vni}"))?;
            changes += 1;
        }
    }
    for vni in current.keys().filter(|v| !wanted.contains_key(v)) {
        maps.flood
            .remove(vni)
            .with_context(|| format!("FLOOD: removing VNI {vni}"))?;
        changes += 1;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_floods_to_its_remote_vteps_through_its_ports_helper() {
        let mut s = MapState::default();
        s.networks.insert(42, 4789);
        s.networks.insert(43, 8472);
        s.vteps.insert((42, [10, 0, 0, 3]));
        s.vteps.insert((42, [10, 0, 0, 2]));
        s.vteps.insert((43, [10, 0, 0, 9]));
        let resolve = |name: &str| match name {
            "ovbr42" => Some(7),
            "ovgro4789" => Some(5),
            _ => None,
        };
        let blue = Settings {
            bum_rate: 100,
            internal: false,
        };
        let red = Settings {
            bum_rate: 0,
            internal: true,
        };
        let (want, overflow) = wanted(&s, &BTreeMap::from([(42, blue), (43, red)]), &resolve);
        assert!(overflow.is_empty());
        let blue = want[&42];
        assert_eq!(
            (blue.bridge, blue.tunnel, blue.rate_pps, blue.count),
            (7, 5, 100, 2)
        );
        assert_eq!(blue.vteps[..2], [[10, 0, 0, 2], [10, 0, 0, 3]]);
        let red = want[&43];
        assert_eq!(
            (red.bridge, red.tunnel, red.count, red.internal),
            (0, 0, 1, 1)
        );
        assert_eq!(blue.internal, 0);
        assert_eq!(red.vteps[0], [10, 0, 0, 9]);
    }

    #[test]
    fn more_vteps_than_a_list_holds_are_reported() {
        let mut s = MapState::default();
        s.networks.insert(42, 4789);
        for i in 0..(MAX_FLOOD_VTEPS as u8 + 3) {
            s.vteps.insert((42, [10, 0, 1, i]));
        }
        let (want, overflow) = wanted(&s, &BTreeMap::new(), &|_| None);
        assert_eq!(overflow, vec![(42, MAX_FLOOD_VTEPS + 3)]);
        assert_eq!(want[&42].count as usize, MAX_FLOOD_VTEPS);
    }
}
