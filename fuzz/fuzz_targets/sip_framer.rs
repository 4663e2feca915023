//! The SIP stream framer (`sip::StreamFramer`, TCP and TLS) fed arbitrary bytes in arbitrary
//! chunks. Invariants: the same frames whatever the chunking (and an error in both or neither);
//! the buffer stays within the message size limit plus the last piece; every message frame fits
//! the limit and starts with its start line; a framing error's reply, if any, renders as one
//! well-formed message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::{Input, assert_crlf_lines};
use mailfront_protocol::sip::{self, Frame, FramingError, SipLimits, StreamFramer};

fn frames(pieces: &[&[u8]], limits: SipLimits) -> (Vec<Frame>, Option<FramingError>) {
    let mut framer = StreamFramer::new(limits);
    let mut out = Vec::new();
    for piece in pieces {
        framer.push(piece);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    if let Frame::Message(message) = &frame {
                        assert!(message.len() <= limits.max_message_size);
                        assert!(!matches!(message.first(), Some(b'\r' | b'\n') | None));
                    }
                    out.push(frame);
                }
                Ok(None) => {
                    assert!(framer.buffered() <= limits.max_message_size + piece.len());
                    break;
                }
                Err(error) => return (out, Some(error)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Input {
        flags,
        mut rng,
        payload,
    } = Input::new(data);
    let limits = if flags & 1 != 0 {
        SipLimits {
            max_message_size: 300,
            max_headers: 12,
            max_line_length: 120,
        }
    } else {
        SipLimits::default()
    };
    let (whole, whole_error) = frames(&[payload], limits);
    let pieces = rng.pieces(payload);
    let (chunked, chunked_error) = frames(&pieces, limits);
    let n = whole.len().min(chunked.len());
    assert_eq!(whole[..n], chunked[..n], "framing depends on chunking");
    assert_eq!(whole_error.is_some(), chunked_error.is_some());
    if whole_error.is_none() {
        assert_eq!(whole, chunked, "framing depends on chunking");
    }
    for error in [whole_error, chunked_error].into_iter().flatten() {
        if let Some((reply, echo)) = error.reply(&limits) {
            let bytes = sip::render(&reply, &echo, "192.0.2.7:5060".parse().unwrap(), "t");
            assert_crlf_lines(&bytes);
            let mut framer = StreamFramer::new(SipLimits {
                max_message_size: 1 << 20,
                ..limits
            });
            framer.push(&bytes);
            assert_eq!(framer.next_frame(), Ok(Some(Frame::Message(bytes))));
        }
    }
});
