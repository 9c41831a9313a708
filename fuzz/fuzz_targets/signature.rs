//! Signature headers and bodies from the fuzzer: verification must answer Ok or
//! a VerifyError, never panic, and never accept what the secret did not sign.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use replicate_relay::clock::FixedClock;
use replicate_relay::signature::{Secret, SignedHeaders, Verifier};

const SECRET: &str = "whsec_ZnV6ei1zZWNyZXQtZm9yLXNpZ25hdHVyZXM=";

fuzz_target!(|data: &[u8]| {
    // Layout: id \n timestamp \n signature-header \n body
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let (Some(id), Some(ts), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let body = parts.next().unwrap_or_default();
    let (Ok(id), Ok(ts), Ok(sig)) = (
        std::str::from_utf8(id),
        std::str::from_utf8(ts),
        std::str::from_utf8(sig),
    ) else {
        return;
    };
    let _ = Secret::parse(sig);
    let secret = Secret::parse(SECRET).unwrap();
    let verifier = Verifier::new(
        vec![secret.clone()],
        Duration::from_secs(300),
        Arc::new(FixedClock(1_700_000_000)),
    );
    let headers = SignedHeaders {
        id,
        timestamp: ts,
        signature: sig,
    };
    if verifier.verify(headers, body).is_ok() {
        // Only a real signature over exactly these bytes may pass.
        let ts: i64 = ts.trim().parse().unwrap();
        let real = secret.sign(id, ts, body);
        assert!(
            sig.split(' ').any(|entry| entry == real),
            "accepted a forged signature"
        );
    }
});
