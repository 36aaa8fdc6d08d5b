//! The compiled programs loaded into the kernel: what its verifier costs each of them.
use overlay_common::programs;
use overlay_tests::fixture::Node;

/// The verifier walks every path of a program once per state it cannot merge with one already
/// seen. A change that multiplies the states (a flag it knows, carried through a loop; a
/// running count) costs every agent start and creeps towards the kernel's limit of 1,000,000
/// instructions: from_container went from 108,000 to 617,000 that way, and an agent restarted
/// on a loaded machine then took longer than its lease (packets lost). On 6.18 it takes
/// 174,000 now (from_underlay 7,200, with the checksum and ECN of issue 31); the budgets leave
/// room to grow, not to multiply. A packet to a published port is `nodeport_in`'s, a program
/// of its own that `from_underlay` tail-calls: inlined, it took from_underlay to 27,000.
#[test]
fn every_program_verifies_well_within_the_kernels_limit() {
    let mut node = Node::load(&overlay_tests::unique("vcost")).unwrap();
    for (name, budget) in [
        (programs::FROM_CONTAINER, 250_000),
        (programs::FROM_UNDERLAY, 20_000),
        (programs::GRO_SINK, 1_000),
        (programs::FRAGMENT, 20_000),
        (programs::FRAGMENT_FIRST, 40_000),
        (programs::NODEPORT_IN, 20_000),
    ] {
        let verified = node
            .dataplane
            .program(name)
            .unwrap()
            .info()
            .unwrap()
            .verified_instruction_count()
            .expect("the kernel reports verified instructions (5.16+)");
        eprintln!("{name}: {verified} instructions verified (budget {budget})");
        assert!(
            verified <= budget,
            "{name}: {verified} instructions verified, over its budget of {budget}"
        );
    }
}
