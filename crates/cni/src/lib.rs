//! CNI protocol types (config, results, errors) and IPAM logic for the `cipherlane` plugin.
//! Pure: the binary does the stdin/stdout/env and the netlink. Filled in by the CNI issue.
#![forbid(unsafe_code)]
