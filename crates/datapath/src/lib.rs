//! Desired datapath state (XFRM policies, states, routes) and its diff against what the kernel
//! has. Pure logic only; the netlink adapter lives elsewhere. Filled in by the datapath issue.
#![forbid(unsafe_code)]
