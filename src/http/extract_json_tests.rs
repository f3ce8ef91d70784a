use super::*;

fn refused(body: &str) -> String {
    match parse_json(body.as_bytes()) {
        Err(AppError::BadRequest(message)) => message,
        other => panic!("{body}: {other:?}"),
    }
}

#[test]
fn a_key_twice_in_one_object_is_refused_naming_it_and_where() {
    let m = refused(r#"{"to": "6281", "body": "x", "to": "6282"}"#);
    assert!(
        m.contains("\"to\" appears twice") && m.contains("(at `to`)"),
        "{m}"
    );
    let m = refused(r#"{"messages": [{"to": "1"}, {"to": "2", "body": "a", "body": "b"}]}"#);
    assert!(m.contains("(at `messages[1].body`)"), "{m}");
    let m = refused(r#"[{"a": {"b\u0000": 1, "b\u0000": 2}}]"#);
    assert!(m.contains("(at `[0].a.b\\u0000`)"), "{m}");
    // the same key in different objects, and escapes that only look alike, are fine
    let v = parse_json(br#"{"a": {"k": 1}, "b": {"k": 2}, "k": 3, "\u006b2": 4, "k\u0032": 5}"#);
    assert!(v.is_err(), "k2 spelled twice is the same key");
    let v = parse_json(br#"{"a": {"k": 1}, "b": {"k": 2}, "k": 3}"#).unwrap();
    assert_eq!(v, serde_json::json!({"a": {"k": 1}, "b": {"k": 2}, "k": 3}));
}

#[test]
fn values_come_out_as_serde_json_reads_them() {
    let body = r#"{"n": [0, -1, 18446744073709551615, 1.5, 1e300, -0.0], "s": "é\n", "t": true,
                   "z": null, "o": {}, "a": []}"#;
    assert_eq!(
        parse_json(body.as_bytes()).unwrap(),
        serde_json::from_str::<Value>(body).unwrap()
    );
    for bad in ["{", "[1,]", "{\"a\": 1} x", "1e400", "\"\\ud800\""] {
        let m = refused(bad);
        assert!(m.starts_with("malformed JSON: "), "{bad}: {m}");
        assert!(!m.contains("twice"), "{bad}: {m}");
    }
    let long = "k".repeat(5000);
    let m = refused(&format!(r#"{{"{long}": 1, "{long}": 2}}"#));
    assert!(m.len() < 400, "{m}");
    let deep = "[".repeat(200) + &"]".repeat(200);
    assert!(refused(&deep).contains("recursion limit"));
}

#[test]
fn a_bulk_body_leaves_its_items_to_their_validation_and_checks_the_rest() {
    let body = serde_json::json!({
        "customers": [{"nama": "\u{0}"}, "\u{0}"],
        "\u{0}": 1,
        "note": "a\u{0}",
        "deep": {"x": ["\u{0}"]}
    });
    assert_eq!(
        nul_paths_outside_items(&body),
        ["\\u0000", "deep.x[0]", "note"]
    );
    assert!(nul_paths_outside_items(&serde_json::json!([{"a\u{0}": 1}])).is_empty());
    assert_eq!(
        nul_paths_outside_items(&serde_json::json!("\u{0}")),
        ["body"]
    );
}
