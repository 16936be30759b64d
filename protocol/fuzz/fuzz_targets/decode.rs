//! Feeds arbitrary bytes to both message decoders and to the stream framer.
//!
//! Neither may panic, every message that decodes must re-encode to exactly
//! the input (one encoding per message), and every frame taken from a stream
//! must re-frame to exactly the bytes it was read from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_protocol::{FrameDecoder, decode_client, decode_server, encode_client, encode_server, write_frame};

/// Decodes `bytes` as both directions; an `Ok` must re-encode to `bytes`.
fn decode_both(bytes: &[u8]) {
    if let Ok(msg) = decode_client(bytes) {
        assert_eq!(encode_client(&msg), bytes, "{msg:?}");
    }
    if let Ok(msg) = decode_server(bytes) {
        assert_eq!(encode_server(&msg), bytes, "{msg:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    decode_both(data);

    // The same bytes as a stream, pushed in two chunks split at a point the
    // input chooses, so that frames also arrive cut in two.
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut decoder = FrameDecoder::new();
    let mut reframed = Vec::new();
    let mut failed = false;
    'feed: for chunk in [&data[..split], &data[split..]] {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    decode_both(&frame);
                    write_frame(&frame, &mut reframed);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(&data[..reframed.len()], &reframed[..]);
    if !failed {
        assert_eq!(decoder.buffered(), data.len() - reframed.len());
    }
});
