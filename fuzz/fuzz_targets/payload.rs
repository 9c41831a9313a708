//! Arbitrary bodies through the intake's reader and the typed model: an error
//! or an event, never a panic; and what the reader accepts, the full model reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicate_relay::event::{Envelope, Event};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::read(data, None) {
        let event = Event::from_body(data, "").expect("an accepted body reads as an event");
        assert_eq!(event.kind, envelope.kind);
        assert_eq!(event.job().common().id, envelope.id);
    }
});
