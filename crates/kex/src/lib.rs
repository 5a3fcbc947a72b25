//! The pairwise key exchange (see docs/protocol.md). Sans-I/O: methods take input and return
//! actions; time comes from an injected clock. Filled in by the key-exchange issue.
#![forbid(unsafe_code)]
