//! The bounded line reader (`LineReader`): fed in arbitrary pieces, it returns the same lines as
//! a simple reference splitter, never a line over the limit, reports a too-long line as soon
//! as it is known (never buffering more than the limit plus one byte without a line ending), and
//! `take_bytes`/`unread`/`take_all` keep the byte stream intact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_protocol::line::LineReader;

fuzz_target!(|data: &[u8]| {
    let Input {
        flags,
        mut rng,
        payload,
    } = Input::new(data);
    let max = usize::from(flags & 0x3f);
    let mut reader = LineReader::new(max);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut too_long = false;
    'outer: for piece in rng.pieces(payload) {
        reader.push(piece);
        loop {
            match reader.next_line() {
                Ok(Some(line)) => {
                    assert!(line.len() <= max);
                    got.push(line);
                }
                Ok(None) => {
                    assert!(
                        reader.len() <= max + 1,
                        "buffered {} without a line ending",
                        reader.len()
                    );
                    break;
                }
                Err(_) => {
                    too_long = true;
                    break 'outer;
                }
            }
        }
    }
    // The reference: split on LF, strip one CR, stop at the first line over the limit.
    let mut expected = Vec::new();
    let mut rest = payload;
    let mut reference_too_long = false;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        let mut line = &rest[..lf];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.len() > max {
            reference_too_long = true;
            break;
        }
        expected.push(line.to_vec());
        rest = &rest[lf + 1..];
    }
    if !reference_too_long && rest.len() > max + 1 {
        reference_too_long = true;
    }
    assert_eq!(too_long, reference_too_long);
    assert_eq!(got, expected);
    if !too_long {
        // What is left is the unterminated tail; raw access keeps it intact.
        let n = rng.below(rest.len() as u64 + 1) as usize;
        let head = reader.take_bytes(n);
        assert_eq!(head, &rest[..n]);
        reader.unread(&head);
        assert_eq!(reader.take_all(), rest);
        assert!(reader.is_empty());
    }
});
