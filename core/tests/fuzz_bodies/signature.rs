//! `signature_extract`: the signature convention's extractor on arbitrary payloads.
//!
//! Input format: the whole input is one frame payload (so any XML file is a seed as it is).
//! When the parser accepts it as a VOEvent, the signature is extracted over its element and
//! checked: a signature lies after the element, its armour is framed and bounded; removing
//! its comment leaves an unsigned payload; signing that again by
//! [`append_signature`] gives back the same armour, the same element, and a payload the parser
//! still accepts. Whatever the input, extraction over odd ranges never panics.

use vtp_core::message::{self, Message, ParseLimits};
use vtp_core::signature::{COMMENT_LEN_MAX, Extracted, append_signature, extract};

/// The fuzz body.
pub(crate) fn signature_extract(data: &[u8]) {
    // Odd ranges first: any result, no panic.
    let first_lt = data.iter().position(|&b| b == b'<').unwrap_or(0);
    let last_gt = data.iter().rposition(|&b| b == b'>').map_or(0, |i| i + 1);
    let _ = extract(data, first_lt..last_gt);
    let _ = extract(data, 0..data.len());
    let _ = extract(data, last_gt..first_lt);

    let Ok(Message::VoEvent(ev)) = message::parse(data, &ParseLimits::default()) else {
        return;
    };
    let element = ev.element;
    let signed = match extract(data, element.clone()) {
        Extracted::Signed(signed) => signed,
        Extracted::Unsigned | Extracted::Malformed(_) => return,
    };
    assert_eq!(signed.signed, element);
    assert!(signed.comment.start >= element.end && signed.comment.end <= data.len());
    assert!(signed.comment.len() <= COMMENT_LEN_MAX);
    assert!(signed.armour.starts_with("-----BEGIN PGP SIGNATURE-----"));
    assert!(signed.armour.ends_with("-----END PGP SIGNATURE-----"));

    let unsigned = [&data[..signed.comment.start], &data[signed.comment.end..]].concat();
    assert_eq!(
        extract(&unsigned, element.clone()),
        Extracted::Unsigned,
        "removing the signature comment left a signature"
    );
    // An armour whose substitution is ambiguous (`-=====` reads back as `------`) is refused.
    let Ok(again) = append_signature(&unsigned, element.clone(), &signed.armour) else {
        return;
    };
    assert_eq!(again[element.clone()], data[element.clone()]);
    match extract(&again, element.clone()) {
        Extracted::Signed(back) => assert_eq!(back.armour, signed.armour),
        other => panic!("re-signed payload reads as {other:?}"),
    }
    let unlimited = ParseLimits {
        text_max: usize::MAX,
        ..ParseLimits::default()
    };
    match message::parse(&again, &unlimited) {
        Ok(Message::VoEvent(back)) => assert_eq!(back.element, element),
        other => panic!("re-signed payload does not parse: {other:?}"),
    }
}
