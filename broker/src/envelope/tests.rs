//! Round trips for every encoding x compression, the documented JSON form,
//! content type parsing, and refusal of hostile or foreign input.

use super::*;

const ENCODINGS: [Encoding; 2] = [Encoding::Postcard, Encoding::Json];
const COMPRESSIONS: [Compression; 3] = [Compression::None, Compression::Lz4, Compression::Gzip];

fn sample() -> Vec<Message> {
    vec![
        Message {
            topic: "gw-0001/sensors/t1".into(),
            timestamp_ms: 1_700_000_000_000,
            qos: 1,
            retain: false,
            payload: Bytes::from_static(b"21.5"),
            user_properties: vec![("unit".into(), "C".into()), ("unit".into(), "K".into())],
        },
        Message {
            topic: "gw-0001/raw".into(),
            timestamp_ms: u64::MAX,
            qos: 0,
            retain: true,
            payload: Bytes::from_static(&[0, 1, 2, 0xff, 0xfe]),
            user_properties: vec![],
        },
        Message {
            topic: "empty/π".into(),
            timestamp_ms: 0,
            qos: 2,
            retain: false,
            payload: Bytes::new(),
            user_properties: vec![],
        },
    ]
}

fn all_formats() -> impl Iterator<Item = Format> {
    ENCODINGS.into_iter().flat_map(|encoding| {
        COMPRESSIONS.into_iter().map(move |compression| Format {
            encoding,
            compression,
        })
    })
}

#[test]
fn round_trips_every_encoding_and_compression() {
    for format in all_formats() {
        for batch in [sample(), vec![]] {
            let bytes = encode(&batch, format).unwrap();
            assert_eq!(decode(&bytes, format).unwrap(), batch, "{format}");
            let via_ct = decode_content_type(&format.content_type(), &bytes).unwrap();
            assert_eq!(via_ct, batch, "{format}");
        }
    }
}

#[test]
fn compression_shrinks_repetitive_telemetry() {
    let batch: Vec<Message> = (0..200)
        .map(|i| Message {
            topic: format!("gw-0001/sensors/temp-{}", i % 10),
            timestamp_ms: 1_700_000_000_000 + i,
            qos: 1,
            retain: false,
            payload: Bytes::from(format!("{{\"t\":21.{},\"unit\":\"C\"}}", i % 10)),
            user_properties: vec![],
        })
        .collect();
    for encoding in ENCODINGS {
        let plain = encode(
            &batch,
            Format {
                encoding,
                compression: Compression::None,
            },
        )
        .unwrap();
        for compression in [Compression::Lz4, Compression::Gzip] {
            let packed = encode(
                &batch,
                Format {
                    encoding,
                    compression,
                },
            )
            .unwrap();
            assert!(packed.len() < plain.len() / 2, "{encoding}/{compression}");
        }
    }
}

#[test]
fn content_type_names_encoding_and_compression() {
    let f = Format {
        encoding: Encoding::Postcard,
        compression: Compression::Lz4,
    };
    assert_eq!(
        f.content_type(),
        "application/vnd.edgemq.batch+postcard; compression=lz4"
    );
    for format in all_formats() {
        assert_eq!(
            Format::from_content_type(&format.content_type()).unwrap(),
            format
        );
    }
    let bare = Format::from_content_type("application/vnd.edgemq.batch+json").unwrap();
    assert_eq!(
        bare,
        Format {
            encoding: Encoding::Json,
            compression: Compression::None
        }
    );
    let loose = Format::from_content_type(
        "application/vnd.edgemq.batch+JSON ;charset=utf-8; Compression=\"GZIP\"",
    )
    .unwrap();
    assert_eq!(
        loose,
        Format {
            encoding: Encoding::Json,
            compression: Compression::Gzip
        }
    );
}

#[test]
fn foreign_content_types_are_refused() {
    for ct in [
        "application/json",
        "application/vnd.edgemq.batch",
        "application/vnd.edgemq.batch+cbor",
        "application/vnd.edgemq.batch+json; compression=zstd",
        "",
    ] {
        assert!(Format::from_content_type(ct).is_err(), "{ct:?}");
    }
}

#[test]
fn json_form_is_the_documented_one() {
    let format = Format {
        encoding: Encoding::Json,
        compression: Compression::None,
    };
    let bytes = encode(&sample()[..2], format).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let expected = serde_json::json!({"v": 1, "messages": [
        {"topic": "gw-0001/sensors/t1", "timestamp_ms": 1_700_000_000_000u64, "qos": 1,
         "retain": false, "payload": "21.5", "user_properties": [["unit", "C"], ["unit", "K"]]},
        {"topic": "gw-0001/raw", "timestamp_ms": u64::MAX, "qos": 0, "retain": true,
         "payload_b64": "AAEC//4="}
    ]});
    assert_eq!(value, expected);
}

#[test]
fn json_written_by_another_language_is_read() {
    let text = br#"{"v":1,"extra":true,"messages":[
        {"topic":"a/b","timestamp_ms":5,"qos":1,"payload":"hi","note":"ignored"},
        {"topic":"c","timestamp_ms":6,"qos":0,"payload_b64":"AP8="}]}"#;
    let format = Format {
        encoding: Encoding::Json,
        compression: Compression::None,
    };
    let messages = decode(text, format).unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].payload, Bytes::from_static(b"hi"));
    assert!(!messages[0].retain && messages[0].user_properties.is_empty());
    assert_eq!(messages[1].payload, Bytes::from_static(&[0, 0xff]));
}

#[test]
fn json_payload_fields_must_be_exactly_one() {
    let format = Format {
        encoding: Encoding::Json,
        compression: Compression::None,
    };
    let both = br#"{"v":1,"messages":[{"topic":"a","timestamp_ms":1,"qos":0,"payload":"x","payload_b64":"eA=="}]}"#;
    let neither = br#"{"v":1,"messages":[{"topic":"a","timestamp_ms":1,"qos":0}]}"#;
    let bad_b64 =
        br#"{"v":1,"messages":[{"topic":"a","timestamp_ms":1,"qos":0,"payload_b64":"!!"}]}"#;
    assert!(matches!(
        decode(both, format),
        Err(EnvelopeError::PayloadField { index: 0 })
    ));
    assert!(matches!(
        decode(neither, format),
        Err(EnvelopeError::PayloadField { index: 0 })
    ));
    assert!(matches!(
        decode(bad_b64, format),
        Err(EnvelopeError::Base64 { index: 0, .. })
    ));
}

#[test]
fn other_versions_are_refused_with_a_clear_error() {
    let postcard = Format {
        encoding: Encoding::Postcard,
        compression: Compression::None,
    };
    let mut bytes = encode(&sample(), postcard).unwrap();
    bytes[0] = 2;
    assert!(matches!(
        decode(&bytes, postcard),
        Err(EnvelopeError::UnsupportedVersion(2))
    ));
    assert!(matches!(decode(&[], postcard), Err(EnvelopeError::Empty)));
    let json = Format {
        encoding: Encoding::Json,
        compression: Compression::None,
    };
    let v2 = br#"{"v":2,"messages":"something new"}"#;
    assert!(matches!(
        decode(v2, json),
        Err(EnvelopeError::UnsupportedVersion(2))
    ));
}

#[test]
fn decompression_is_bounded() {
    let big = vec![Message {
        topic: "t".into(),
        timestamp_ms: 0,
        qos: 0,
        retain: false,
        payload: Bytes::from(vec![b'a'; 1 << 20]),
        user_properties: vec![],
    }];
    for format in all_formats() {
        let bytes = encode(&big, format).unwrap();
        let err = decode_with_limit(&bytes, format, 64 * 1024).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::TooLarge { limit: 65536 }),
            "{format}: {err}"
        );
        assert_eq!(decode(&bytes, format).unwrap(), big);
    }
}

#[test]
fn garbage_and_truncation_give_errors_not_panics() {
    for format in all_formats() {
        let bytes = encode(&sample(), format).unwrap();
        for cut in 0..bytes.len() {
            // A cut that removes only the LZ4 end mark still yields the whole
            // batch; any other cut must fail. Never a different batch.
            if let Ok(messages) = decode(&bytes[..cut], format) {
                assert_eq!(messages, sample(), "{format} cut at {cut}");
                assert!(bytes.len() - cut <= 4, "{format} cut at {cut}");
            }
        }
        let mut flipped = bytes.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x5a;
            let _ = decode(&flipped, format);
            flipped[i] ^= 0x5a;
        }
    }
}

#[test]
fn size_hint_bounds_each_message() {
    for encoding in ENCODINGS {
        let format = Format {
            encoding,
            compression: Compression::None,
        };
        let empty = encode(&[], format).unwrap().len();
        for m in sample() {
            let alone = encode(std::slice::from_ref(&m), format).unwrap().len();
            assert!(m.size_hint(encoding) >= alone - empty, "{encoding}: {m:?}");
        }
        let all = encode(&sample(), format).unwrap().len();
        let hinted: usize = sample().iter().map(|m| m.size_hint(encoding)).sum();
        assert!(hinted + empty >= all, "{encoding}");
    }
}
