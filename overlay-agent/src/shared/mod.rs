//! Values and names every layer shares. Nothing here imports the rest of the crate.
pub mod backoff;
#[cfg(test)]
pub(crate) mod fuzzing;
pub mod hash;
pub mod ifnames;
pub mod ipam;
pub mod lock;
pub mod net;
pub mod text;
