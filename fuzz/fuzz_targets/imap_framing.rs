//! The IMAP framer (`imap::framing::Framer`) fed arbitrary bytes in arbitrary chunks, with the
//! owner's literal decisions from the input. Invariants: the same frames whatever the chunking;
//! no frame larger than `max_message`; a message is whole lines ending in CRLF; `buffered`
//! stays within twice what was pushed (line endings are normalised to CRLF).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::{Input, Rng};
use mailfront_protocol::imap::framing::{Frame, FrameLimits, Framer};

const LIMITS: FrameLimits = FrameLimits {
    max_line: 64,
    max_literal: 40,
    max_message: 256,
};

/// Frames `pieces`, deciding literals with `decide` (a copy of the same PRNG each time, so
/// decisions do not depend on chunking); returns the frames and whether framing failed.
fn frames(pieces: &[&[u8]], mut decide: Rng) -> (Vec<Frame>, bool) {
    let mut framer = Framer::new(LIMITS);
    let mut out = Vec::new();
    let mut pushed = 0usize;
    for piece in pieces {
        framer.push(piece);
        pushed += piece.len();
        loop {
            // A line ended by LF alone grows by one byte (its CR) in the message.
            assert!(framer.buffered() <= 2 * pushed);
            match framer.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    if let Frame::Literal(literal) = frame {
                        if decide.one_in(4) || !framer.literal_fits(literal) {
                            if literal.sync {
                                let dropped = framer.reject_literal();
                                assert!(dropped.len() <= LIMITS.max_message);
                            } else if framer.accept_literal().is_err() {
                                return (out, true);
                            }
                        } else {
                            assert!(framer.accept_literal().is_ok(), "a fitting literal refused");
                        }
                    }
                    if let Frame::Message(message) = &frame {
                        assert!(message.len() <= LIMITS.max_message);
                        assert!(message.ends_with(b"\r\n"));
                    }
                    out.push(frame);
                }
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Input {
        mut rng, payload, ..
    } = Input::new(data);
    let decide = rng.clone();
    let whole = frames(&[payload], decide.clone());
    let pieces = rng.pieces(payload);
    let chunked = frames(&pieces, decide);
    assert_eq!(whole, chunked, "framing depends on chunking");
});
