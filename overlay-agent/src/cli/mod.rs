//! The command line's work: commands change state, views (inspect, report, doctor, monitor)
//! print it, and `reference` renders docs/cli.md from the clap definitions.
pub mod commands;
pub mod doctor;
pub mod inspect;
pub mod monitor;
pub mod reference;
pub mod report;
pub mod services;
