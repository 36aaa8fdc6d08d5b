//! The command line's work: commands change state (resolv_conf: a named namespace's resolvers), views (inspect, report, doctor, monitor)
//! print it, and `reference` renders docs/cli.md from the clap definitions.
pub mod commands;
pub mod doctor;
pub mod graph;
pub mod inspect;
pub mod monitor;
pub mod reference;
pub mod report;
pub mod resolv_conf;
pub mod services;
