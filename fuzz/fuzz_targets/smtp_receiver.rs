//! The front-end transport (`Receiver`): inbound SMTP with DATA and BDAT, recipient
//! checks, delivery opening and finishing answered from the input, in arbitrary chunks.
//!
//! Raw mode feeds the payload as the client's stream. The structured modes open one
//! transaction and send the payload as its DATA content or as BDAT chunks, so that the content
//! handed to delivery can be compared with an independent reference decoding of what the client
//! sent. Invariants (see `mailfront_fuzz::smtp::drive_transport`): content only while a
//! delivery is open and never past `max_message_size`; DATA content canonical (CRLF only);
//! dot-stuffed for the backend it has exactly one end of data, at its end, and decodes back to
//! itself (no smuggling); structured content equals the reference; a delivery is never left open
//! at close; STARTTLS drops pipelined bytes; replies are whole CRLF lines; output is bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_fuzz::smtp::drive_transport;

fuzz_target!(|data: &[u8]| {
    drive_transport(Input::new(data));
});
