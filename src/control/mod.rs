//! The control layer: the daemon's life cycle, key commands, `show` and `metrics`, `up`/`down`,
//! and the one UAPI client they all use.

pub mod cmd;
pub mod completion;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod keys;
pub mod log;
pub mod manpages;
pub mod metrics_http;
pub mod policy_routing;
pub mod quick;
pub mod resolvconf;
pub mod resolve;
pub mod show;
pub mod uapi_client;
