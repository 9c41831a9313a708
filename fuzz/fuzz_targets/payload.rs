//! Arbitrary bodies through the intake's reader and the typed model: an error
//! or an event, never a panic; what the reader accepts, the full model reads;
//! and the fields it keeps for routing are those routing would read later.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;

use replicate_relay::event::{Envelope, Event};

fuzz_target!(|data: &[u8]| {
    let keys: BTreeSet<String> = ["status", "output", "metrics", "input"]
        .map(String::from)
        .into();
    if let Ok((envelope, kept)) = Envelope::read_keeping(data, None, &keys) {
        let event = Event::from_body(data, "").expect("an accepted body reads as an event");
        assert_eq!(event.kind, envelope.kind);
        assert_eq!(event.job().common().id, envelope.id);
        let later = Event::for_routing(data, "", envelope.kind, envelope.status, &keys)
            .expect("an accepted body reads for routing");
        assert_eq!(later.payload, kept);
        // `urls` read whole (a route looks at it) or by its shape alone
        // decides the kind the same way.
        let with_urls: BTreeSet<String> = ["urls".to_owned()].into();
        let (whole, _) = Envelope::read_keeping(data, None, &with_urls)
            .expect("keeping another field does not change acceptance");
        assert_eq!(whole.kind, envelope.kind);
    }
});
