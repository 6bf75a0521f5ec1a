//! Warden's userspace agent as a library: the daemon (`daemon`), its
//! subsystems, and the CLI commands. The `warden` binary is a thin `main`
//! over [`commands::dispatch`]; fuzz targets and benches use the modules
//! directly.

// `agent/src` holds no `unsafe`; keep it so (what needs it belongs in a
// crate of its own, reviewed as such).
#![forbid(unsafe_code)]

pub mod approval;
pub mod assets;
pub mod audit;
pub mod bootorder;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod doctor;
pub mod ebpf;
pub mod forward;
pub mod fsutil;
pub mod identity;
pub mod masking;
pub mod metrics;
pub mod policy;
pub mod progress;
pub mod protocol;
pub mod proxy;
pub mod reload;
