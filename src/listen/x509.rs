//! The validity period of an X.509 certificate, read from its DER: when
//! to renew a certificate, and whether one found on disk is still good.
//!
//! Only the path to `tbsCertificate.validity` is walked (RFC 5280 §4.1),
//! so a whole X.509 parser is not needed for two timestamps. The
//! certificate itself is checked by rustls when it is loaded.

use std::time::SystemTime;

/// When a certificate starts and stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The validity of the certificate in `der`, or `None` if it is not a
/// certificate.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == VERSION {
        rest = after;
    }
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (tag, before, rest) = tlv(validity)?;
    let not_before = time(tag, before)?;
    let (tag, after, _) = tlv(rest)?;
    let not_after = time(tag, after)?;
    Some(Validity {
        not_before,
        not_after,
    })
}

const INTEGER: u8 = 0x02;
const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The next element of `der`: its tag, its content, and what follows it.
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (content, after) = rest.split_at(len);
    Some((tag, content, after))
}

fn expect(der: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, content, rest) = tlv(der)?;
    (tag == want).then_some((content, rest))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`), the two forms RFC 5280 allows.
fn time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy: i32 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| rest[i..i + 2].parse::<u8>().ok();
    let month = time::Month::try_from(field(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, field(2)?).ok()?;
    let at = date.with_hms(field(4)?, field(6)?, field(8)?).ok()?;
    Some(at.assume_utc().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(text: &str) -> SystemTime {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .into()
    }

    #[test]
    fn reads_the_validity_rcgen_wrote() {
        for (from, to) in [
            ("2026-01-02T03:04:05Z", "2026-04-02T03:04:05Z"),
            // Both sides of UTCTime's century pivot, and GeneralizedTime
            // from 2050 on.
            ("1999-12-31T23:59:59Z", "2049-12-31T23:59:59Z"),
            ("2030-06-01T00:00:00Z", "2051-06-01T00:00:00Z"),
        ] {
            let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
            params.not_before = time::OffsetDateTime::from(at(from));
            params.not_after = time::OffsetDateTime::from(at(to));
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(
                validity(cert.der()),
                Some(Validity {
                    not_before: at(from),
                    not_after: at(to)
                }),
                "{from} .. {to}"
            );
        }
    }

    #[test]
    fn not_a_certificate() {
        for der in [
            &b""[..],
            b"\x30",
            b"\x30\x05\x30\x03\x02\x01",
            b"\x30\x84\xff\xff\xff\xff",
            b"-----BEGIN CERTIFICATE-----",
        ] {
            assert_eq!(validity(der), None, "{der:?}");
        }
        assert_eq!(time(UTC_TIME, b"261301000000Z"), None, "month 13");
        assert_eq!(time(UTC_TIME, b"2601010000Z"), None, "no seconds");
        assert_eq!(time(GENERALIZED_TIME, b"20260101000000"), None, "no Z");
        assert_eq!(
            time(UTC_TIME, b"700101000001Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1))
        );
    }
}
