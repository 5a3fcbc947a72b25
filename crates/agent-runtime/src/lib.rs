//! The cipherlane-agent's runtime: it wires the node identity, the key exchange (`kex`, `kex-grpc`),
//! the datapath (`datapath`, `xfrm`), the Kubernetes adapter (`agent-k8s`) and the CNI readiness
//! contract together. Logic worth testing alone lives in the library crates; the modules here are
//! either pure bookkeeping (`keyring`) or thin glue.
#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
pub mod http;
pub mod keyring;
pub mod logging;
pub mod maintenance;
pub mod node;
pub mod rekey;

pub use backend::DatapathMode;
pub use config::RunArgs;
pub use node::run;
