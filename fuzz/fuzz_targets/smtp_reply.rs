//! The SMTP reply reader (`smtp::reply::ReplyReader`, used on backend and delivery replies)
//! fed arbitrary bytes in arbitrary chunks: the same replies whatever the chunking; each reply
//! has a code in 200..600 and at most 101 lines; a reply written back with `to_bytes` is whole
//! CRLF lines and reads back as the same reply (control characters other than tab made spaces).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_protocol::smtp::reply::{Reply, ReplyReader};

fn read_all(pieces: &[&[u8]]) -> (Vec<Reply>, bool) {
    let mut reader = ReplyReader::new(512);
    let mut replies = Vec::new();
    for piece in pieces {
        reader.push(piece);
        loop {
            match reader.next_reply() {
                Ok(Some(reply)) => replies.push(reply),
                Ok(None) => break,
                Err(_) => return (replies, true),
            }
        }
    }
    (replies, false)
}

fuzz_target!(|data: &[u8]| {
    let Input {
        mut rng, payload, ..
    } = Input::new(data);
    let (whole, whole_failed) = read_all(&[payload]);
    let pieces = rng.pieces(payload);
    let (chunked, chunked_failed) = read_all(&pieces);
    assert_eq!(whole, chunked);
    assert_eq!(whole_failed, chunked_failed);
    for reply in &whole {
        assert!((200..600).contains(&reply.code));
        assert!(!reply.lines.is_empty() && reply.lines.len() <= 101);
        let bytes = reply.to_bytes();
        mailfront_fuzz::assert_crlf_lines(&bytes);
        if bytes.split(|&b| b == b'\n').any(|line| line.len() > 513) {
            continue; // lossy UTF-8 made a line longer than the reader's limit
        }
        let (again, failed) = read_all(&[&bytes]);
        assert!(!failed);
        // Written back, control characters other than tab become spaces.
        let sanitized = Reply {
            code: reply.code,
            lines: reply
                .lines
                .iter()
                .map(|l| l.replace(|c: char| c.is_control() && c != '\t', " "))
                .collect(),
        };
        assert_eq!(again, vec![sanitized], "reply round trip");
    }
});
