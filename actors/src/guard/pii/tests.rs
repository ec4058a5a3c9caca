//! Tests of personal data and secrets: every kind on matches and near-misses.

use super::*;

/// The texts `kind` finds in `text`, with every kind enabled.
fn found(text: &str) -> Vec<(PiiKind, &str)> {
    let detector = PiiDetector::new(&PiiKind::ALL).unwrap();
    let mut matches = Vec::new();
    detector.find(text, 0, &mut matches);
    matches.iter().map(|found| (found.kind, &text[found.start..found.end])).collect()
}

fn assert_finds(text: &str, kind: PiiKind, expected: &str) {
    assert_eq!(found(text), vec![(kind, expected)], "in {text:?}");
}

fn assert_clean(text: &str) {
    assert_eq!(found(text), vec![], "in {text:?}");
}

#[test]
fn emails_are_found_with_their_boundaries() {
    assert_finds("write to jane.doe+tag@mail.example.co.uk.", PiiKind::Email, "jane.doe+tag@mail.example.co.uk");
    assert_finds("<ops@example.com>", PiiKind::Email, "ops@example.com");
    assert_clean("the user@localhost account");
    assert_clean("an @mention and a@b");
    assert_clean("version foo@1.2.3");
}

#[test]
fn phones_need_a_plus_or_separators() {
    assert_finds("call +1 415 555 0100 now", PiiKind::Phone, "+1 415 555 0100");
    assert_finds("call +44 20 7946 0958", PiiKind::Phone, "+44 20 7946 0958");
    assert_finds("call (415) 555-0100", PiiKind::Phone, "(415) 555-0100");
    assert_finds("call 415-555-0100.", PiiKind::Phone, "415-555-0100");
    assert_finds("tel:+4915112345678", PiiKind::Phone, "+4915112345678");
    assert_finds("ring 020 7946 0958 today", PiiKind::Phone, "020 7946 0958");
    assert_clean("order 4155550100 shipped");
    assert_clean("it costs 12345678 units");
    assert_clean("on 2023-10-12 at 10:30");
    assert_clean("pi is 3.14159265358");
    assert_clean("extension 555-0100");
    assert_clean("+12 is too short");
    assert_clean("415-555-0100-22 is a part number");
}

#[test]
fn payment_cards_pass_luhn() {
    assert_finds("card 4111 1111 1111 1111 exp", PiiKind::PaymentCard, "4111 1111 1111 1111");
    assert_finds("card 5555-5555-5555-4444", PiiKind::PaymentCard, "5555-5555-5555-4444");
    assert_finds("amex 378282246310005", PiiKind::PaymentCard, "378282246310005");
    assert_finds("amex 3782 822463 10005", PiiKind::PaymentCard, "3782 822463 10005");
    assert_clean("card 4111 1111 1111 1112 exp");
    assert_clean("id 1234567890123456");
    assert_clean("isbn 978-3-16-148410-0");
    assert_clean("digits 41111111111111110000000");
}

#[test]
fn luhn_reference_values() {
    assert!(passes_luhn("79927398713"));
    assert!(!passes_luhn("79927398710"));
    assert!(passes_luhn("6011 1111 1111 1117"));
}

#[test]
fn ibans_pass_mod_97_at_their_country_length() {
    assert_finds("pay GB82 WEST 1234 5698 7654 32 today", PiiKind::Iban, "GB82 WEST 1234 5698 7654 32");
    assert_finds("IBAN: DE89370400440532013000.", PiiKind::Iban, "DE89370400440532013000");
    assert_finds("FR14 2004 1010 0505 0001 3M02 606 EUR", PiiKind::Iban, "FR14 2004 1010 0505 0001 3M02 606");
    assert_finds("NL91ABNA0417164300", PiiKind::Iban, "NL91ABNA0417164300");
    assert_clean("pay GB82 WEST 1234 5698 7654 33 today");
    assert_clean("DE89370400440532013001");
    assert_clean("GB82WEST12345698765432XYZ");
    assert_clean("QQ82 WEST 1234 5698 7654 32");
    assert_clean("ISO 9001 AND MORE TEXT HERE");
}

#[test]
fn mod_97_reference_values() {
    assert!(iban_checksum_is_valid("GB82 WEST 1234 5698 7654 32"));
    assert!(!iban_checksum_is_valid("GB82 WEST 1234 5698 7654 23"));
    assert!(!iban_checksum_is_valid("GB8"));
    assert!(!iban_checksum_is_valid("gb82west12345698765432"));
}

#[test]
fn us_social_security_numbers_skip_unassigned_ranges() {
    assert_finds("ssn 123-45-6789.", PiiKind::NationalId, "123-45-6789");
    assert_finds("ssn 536 22 1234", PiiKind::NationalId, "536 22 1234");
    for invalid in ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000"] {
        assert_clean(&format!("ssn {invalid} here"));
    }
    assert_clean("ref 1123-45-6789");
    assert_clean("ref 123-45-67890");
    assert_clean("mixed 123-45 6789");
}

#[test]
fn uk_national_insurance_numbers_skip_unallocated_prefixes() {
    assert_finds("NI number AB 12 34 56 C.", PiiKind::NationalId, "AB 12 34 56 C");
    assert_finds("NI number JG103759A", PiiKind::NationalId, "JG103759A");
    assert_clean("NI number BG 12 34 56 A");
    assert_clean("NI number DA 12 34 56 A");
    assert_clean("NI number AB 12 34 56 E");
    assert_clean("NI number XAB123456C");
}

#[test]
fn ipv4_addresses_parse() {
    assert_finds("host 192.168.1.20 is up", PiiKind::Ipv4, "192.168.1.20");
    assert_finds("from 8.8.8.8.", PiiKind::Ipv4, "8.8.8.8");
    assert_clean("version 999.1.1.1");
    assert_clean("version 1.2.3.4.5");
    assert_clean("build v1.2.3.4");
    assert_clean("leading 01.2.3.4");
    assert_clean("bind 0.0.0.0 and 127.0.0.1");
    assert_clean("ip 256.1.1.1");
}

#[test]
fn ipv6_addresses_parse() {
    assert_finds("host 2001:db8::8a2e:370:7334 is up", PiiKind::Ipv6, "2001:db8::8a2e:370:7334");
    assert_finds("mapped ::ffff:192.0.2.1", PiiKind::Ipv6, "::ffff:192.0.2.1");
    assert_finds("full fe80:0:0:0:204:61ff:fe9d:f156", PiiKind::Ipv6, "fe80:0:0:0:204:61ff:fe9d:f156");
    assert_clean("at 10:30:45 the job ran");
    assert_clean("std::vector::new and Foo::bar");
    assert_clean("loopback ::1 and ::");
    assert_clean("bad 2001:db8:::1");
}

#[test]
fn secrets_are_found() {
    let openai = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z";
    let anthropic = "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1HgFeDcBa";
    let aws = "AKIAIOSFODNN7EXAMPLE";
    let github = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
    let github_fine = "github_pat_11ABCDEFG0123456789_abcdefghijklmnop";
    let slack = "xoxb-1234567890-abcdefghij";
    let google = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    for secret in [openai, anthropic, aws, github, github_fine, slack, google, jwt] {
        assert_finds(&format!("key={secret} ok"), PiiKind::Secret, secret);
    }
    assert_finds("Authorization: Bearer abc123def456ghi789jkl012", PiiKind::Secret, "Bearer abc123def456ghi789jkl012");
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nq1w2e3r4\n-----END RSA PRIVATE KEY-----";
    assert_finds(&format!("key:\n{pem}\nthanks"), PiiKind::Secret, pem);
    assert_finds("-----BEGIN OPENSSH PRIVATE KEY----- cut", PiiKind::Secret, "-----BEGIN OPENSSH PRIVATE KEY-----");
}

#[test]
fn secret_near_misses_are_left_alone() {
    assert_clean("pip install sk-learn-extensions-and-more-things");
    assert_clean("task-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z");
    assert_clean("AKIAIOSFODNN7EXAMPL");
    assert_clean("ghp_short");
    assert_clean("the bearer of extraordinarilylongwordsthatgoon");
    assert_clean("-----BEGIN PUBLIC KEY-----");
    assert_clean("eyJhbGciOiJIUzI1NiJ9 alone");
}

#[test]
fn overlapping_candidates_keep_the_longest() {
    let text = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    assert_finds(text, PiiKind::Secret, text);
    let mut matches = vec![
        PiiMatch { kind: PiiKind::Phone, start: 0, end: 4 },
        PiiMatch { kind: PiiKind::PaymentCard, start: 2, end: 10 },
        PiiMatch { kind: PiiKind::Email, start: 11, end: 12 },
    ];
    resolve_overlaps(&mut matches, 0);
    assert_eq!(matches.iter().map(|found| found.kind).collect::<Vec<_>>(), vec![PiiKind::PaymentCard, PiiKind::Email]);
}

#[test]
fn searching_from_an_offset_uses_the_text_before_for_boundaries() {
    let detector = PiiDetector::new(&PiiKind::ALL).unwrap();
    let text = "x1234 4111 1111 1111 1111";
    let mut matches = Vec::new();
    detector.find(text, 6, &mut matches);
    assert_eq!(matches, vec![PiiMatch { kind: PiiKind::PaymentCard, start: 6, end: 25 }]);
    matches.clear();
    let glued = "ab@c.dejane@example.com";
    detector.find(glued, 7, &mut matches);
    assert_eq!(matches, vec![]);
}

#[test]
fn kinds_round_trip_through_their_names() {
    for kind in PiiKind::ALL {
        assert_eq!(PiiKind::from_name(kind.name()), Some(kind));
        assert_eq!(PiiKind::ALL[kind.index()], kind);
    }
    assert_eq!(PiiKind::from_name("passport"), None);
}

#[test]
fn iban_lengths_are_sorted() {
    assert!(IBAN_LENGTHS.windows(2).all(|pair| pair[0].0 < pair[1].0));
}

#[test]
fn multibyte_text_does_not_panic() {
    assert_finds("é📧 jane@example.com ü", PiiKind::Email, "jane@example.com");
    assert_clean("ééé 🎉🎉 ✓✓ 東京 4111 1111 1111 1112");
}
