//! The control layer: the daemon's life cycle, key commands, `show`, and `up`/`down`.

pub mod cmd;
pub mod completion;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod keys;
pub mod log;
pub mod manpages;
pub mod policy_routing;
pub mod quick;
pub mod resolvconf;
pub mod resolve;
pub mod show;
