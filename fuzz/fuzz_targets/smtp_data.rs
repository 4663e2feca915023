//! The DATA codec (`DataDecoder`, `DotStuffer`) on its own: decoding in arbitrary chunks gives
//! the same content, end and consumption as decoding at once and as an independent reference
//! decoder written from the documented rules; dot-stuffing any content (in arbitrary pieces)
//! gives a wire form with exactly one end of data that decodes back to the canonical content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_fuzz::smtp::{assert_stuffing_round_trip, reference_decode};
use mailfront_protocol::smtp::data::DataDecoder;

fuzz_target!(|data: &[u8]| {
    let Input {
        mut rng, payload, ..
    } = Input::new(data);

    // Decoding in pieces.
    let mut decoder = DataDecoder::new();
    let mut content = Vec::new();
    let mut consumed = 0;
    for piece in rng.pieces(payload) {
        if decoder.is_done() {
            break;
        }
        let used = decoder.decode(piece, &mut content);
        assert!(used <= piece.len());
        consumed += used;
        if used < piece.len() {
            assert!(decoder.is_done(), "input left over before the end of data");
        }
    }
    assert_eq!(decoder.size(), content.len() as u64);
    match reference_decode(payload) {
        Some((expected, used)) => {
            assert!(
                decoder.is_done(),
                "the reference found an end of data, the decoder did not"
            );
            assert_eq!(content, expected);
            assert_eq!(consumed, used);
        }
        None => assert!(
            !decoder.is_done(),
            "an end of data the reference does not see"
        ),
    }

    // Any content survives stuffing and decoding.
    let pieces = rng.pieces(payload);
    assert_stuffing_round_trip(payload, &pieces);
});
