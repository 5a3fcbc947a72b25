//! Feeds arbitrary bytes to the key-exchange message decoder: it must never panic, and whatever
//! it accepts must encode back to exactly the same bytes (one encoding per message).
#![no_main]

use cipherlane_kex::wire::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data) {
        assert_eq!(msg.encode(), data, "decode accepted a non-canonical encoding");
    }
});
