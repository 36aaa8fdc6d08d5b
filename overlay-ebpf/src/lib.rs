//! Empty on purpose: a library target lets overlay-agent name this crate as a build-dependency,
//! so cargo rebuilds the agent (and re-embeds the programs) when the programs change.
#![no_std]
