//! Samples in the shapes Meta documents (and a few it does not promise), read and written back.

use serde_json::json;

use super::*;

fn parse(v: serde_json::Value) -> Notification {
    serde_json::from_value(v).expect("a notification")
}

/// Reads `v`, writes it back, reads that again: the same notification.
fn round_trips(v: serde_json::Value) -> Notification {
    let n = parse(v);
    let again: Notification =
        serde_json::from_slice(&serde_json::to_vec(&n).unwrap()).expect("written back");
    assert_eq!(again, n);
    n
}

fn envelope(value: serde_json::Value) -> serde_json::Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
        {"field": "messages", "value": value}]}]})
}

fn value_of(n: &Notification) -> &ChangeValue {
    &n.entry[0].changes[0].value
}

#[test]
fn statuses_with_and_without_callback_data_pricing_and_conversation() {
    let n = round_trips(envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "statuses": [
            {"id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA", "status": "sent",
             "timestamp": "1750263773", "recipient_id": "6281234567890",
             "biz_opaque_callback_data": "0190f3c2-7d4e-7a1b-9c3d-5e6f7a8b9c0d",
             "conversation": {"id": "f0c5d4e3", "origin": {"type": "utility"}},
             "pricing": {"billable": true, "pricing_model": "PMP", "category": "utility", "type": "regular"}},
            {"id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA", "status": "delivered",
             "timestamp": "1750263774", "recipient_id": "6281234567890"}
        ]
    })));
    assert_eq!(n.object, OBJECT);
    assert_eq!(n.entry[0].id, "102290129340398");
    assert_eq!(n.entry[0].changes[0].field, "messages");
    let v = value_of(&n);
    assert_eq!(
        v.metadata.as_ref().unwrap().phone_number_id.as_deref(),
        Some("106540352242922")
    );
    let [sent, delivered] = &v.statuses[..] else {
        panic!("{v:?}")
    };
    assert_eq!(sent.status, DeliveryStatus::Sent);
    assert_eq!(sent.timestamp.as_deref(), Some("1750263773"));
    assert_eq!(
        sent.biz_opaque_callback_data.as_deref(),
        Some("0190f3c2-7d4e-7a1b-9c3d-5e6f7a8b9c0d")
    );
    assert_eq!(
        sent.pricing.as_ref().unwrap().category.as_deref(),
        Some("utility")
    );
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(delivered.biz_opaque_callback_data, None);
    assert_eq!(delivered.recipient_id.as_deref(), Some("6281234567890"));
    assert!(v.messages.is_empty() && v.contacts.is_empty());
}

#[test]
fn a_failed_status_carries_its_error_code_and_details() {
    let n = round_trips(envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "statuses": [{"id": "wamid.X", "status": "failed", "timestamp": "1750263775",
            "recipient_id": "6281234567890", "biz_opaque_callback_data": "m-1",
            "errors": [{"code": 131026, "title": "Message undeliverable",
                "message": "Message undeliverable",
                "error_data": {"details": "Message Undeliverable."},
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]}]
    })));
    let status = &value_of(&n).statuses[0];
    assert_eq!(status.status, DeliveryStatus::Failed);
    assert_eq!(status.errors[0].code, Some(131026));
    assert_eq!(
        status.errors[0]
            .error_data
            .as_ref()
            .unwrap()
            .details
            .as_deref(),
        Some("Message Undeliverable.")
    );
}

#[test]
fn inbound_text_with_its_contact() {
    let n = round_trips(envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Budi"}, "wa_id": "6281234567890"}],
        "messages": [{"from": "6281234567890", "id": "wamid.IN1", "timestamp": "1750263800",
            "type": "text", "text": {"body": "STOP"}}]
    })));
    let v = value_of(&n);
    assert_eq!(
        v.contacts[0].profile.as_ref().unwrap().name.as_deref(),
        Some("Budi")
    );
    let m = &v.messages[0];
    assert_eq!(m.from.as_deref(), Some("6281234567890"));
    assert_eq!(m.kind, "text");
    assert_eq!(m.body(), Some("STOP"));
}

#[test]
fn a_username_user_without_a_phone_number_and_an_unknown_type_are_read() {
    let n = round_trips(envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "budi.bengkel"}, "user_id": "ID.1234567890"}],
        "messages": [
            {"user_id": "ID.1234567890", "id": "wamid.IN2", "timestamp": "1750263801",
             "type": "text", "text": {"body": "halo"}},
            {"from": "6281234567890", "id": "wamid.IN3", "timestamp": "1750263802",
             "type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}},
            {"from": "6281234567890", "id": "wamid.IN4", "timestamp": 1750263803, "type": "unsupported",
             "errors": [{"code": 131051, "title": "Message type unknown"}]}
        ]
    })));
    let v = value_of(&n);
    assert_eq!(v.contacts[0].wa_id, None);
    assert_eq!(v.contacts[0].user_id.as_deref(), Some("ID.1234567890"));
    let [by_user, reaction, unsupported] = &v.messages[..] else {
        panic!("{v:?}")
    };
    assert_eq!(by_user.from, None);
    assert_eq!(by_user.user_id.as_deref(), Some("ID.1234567890"));
    assert_eq!(by_user.body(), Some("halo"));
    assert_eq!(reaction.kind, "reaction");
    assert_eq!(reaction.body(), None);
    // A number where Meta writes a string.
    assert_eq!(unsupported.timestamp.as_deref(), Some("1750263803"));
}

#[test]
fn an_unknown_status_and_other_fields_do_not_fail_the_notification() {
    let n = round_trips(
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "message_template_status_update", "value": {"event": "APPROVED", "message_template_id": 12}},
        {"field": "messages", "value": {"statuses": [{"id": "wamid.Y", "status": "deleted"}]}}
    ]}], "new_top_level": true}),
    );
    assert_eq!(n.entry[0].changes[0].value, ChangeValue::default());
    let status = &n.entry[0].changes[1].value.statuses[0];
    assert_eq!(status.status, DeliveryStatus::Other("deleted".into()));
    assert_eq!(status.status.as_str(), "deleted");
    assert_eq!(
        serde_json::to_value(&status.status).unwrap(),
        json!("deleted")
    );
}

#[test]
fn a_status_without_its_id_is_malformed() {
    let v = envelope(json!({"statuses": [{"status": "sent", "timestamp": "1"}]}));
    assert!(serde_json::from_value::<Notification>(v).is_err());
}

#[test]
fn send_requests_are_written_as_meta_documents_them() {
    let text = SendRequest::text("6281234567890", "Halo", Some("m-1"));
    assert_eq!(
        serde_json::to_value(&text).unwrap(),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "6281234567890",
               "type": "text", "text": {"preview_url": false, "body": "Halo"},
               "biz_opaque_callback_data": "m-1"})
    );
    let document = SendRequest::media(
        "628",
        false,
        "https://x/invoice.pdf",
        Some("Nota"),
        Some("invoice.pdf"),
        None,
    );
    assert_eq!(
        serde_json::to_value(&document).unwrap(),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "628",
               "type": "document",
               "document": {"link": "https://x/invoice.pdf", "caption": "Nota", "filename": "invoice.pdf"}})
    );
    let image = SendRequest::media(
        "628",
        true,
        "https://x/a.jpg",
        Some("Foto"),
        Some("a.jpg"),
        None,
    );
    assert_eq!(
        serde_json::to_value(&image).unwrap()["image"],
        json!({"link": "https://x/a.jpg", "caption": "Foto"})
    );
    let template = SendRequest::template(
        "628",
        "servis_reminder",
        "id",
        &["Budi", "B 1234 XY"],
        Some("m-2"),
    );
    assert_eq!(
        serde_json::to_value(&template).unwrap(),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "628",
               "type": "template", "template": {"name": "servis_reminder", "language": {"code": "id"},
               "components": [{"type": "body", "parameters": [
                   {"type": "text", "text": "Budi"}, {"type": "text", "text": "B 1234 XY"}]}]},
               "biz_opaque_callback_data": "m-2"})
    );
    for request in [text, document, image, template] {
        let back: SendRequest =
            serde_json::from_value(serde_json::to_value(&request).unwrap()).unwrap();
        assert_eq!(back, request, "{}", request.kind());
    }
}

#[test]
fn send_answers_and_graph_errors_are_read() {
    let ok: SendAnswer = serde_json::from_value(json!({"messaging_product": "whatsapp",
        "contacts": [{"input": "6281234567890", "wa_id": "6281234567890"}],
        "messages": [{"id": "wamid.HBgLNjI4MTIzNDU2Nzg5MA==", "message_status": "accepted"}]}))
    .unwrap();
    assert_eq!(ok.wamid(), Some("wamid.HBgLNjI4MTIzNDU2Nzg5MA=="));
    assert_eq!(SendAnswer::default().wamid(), None);
    let err: ErrorAnswer = serde_json::from_value(json!({"error": {
        "message": "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "type": "OAuthException", "code": 131056,
        "error_data": {"messaging_product": "whatsapp", "details": "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."},
        "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"}}))
    .unwrap();
    assert_eq!(err.error.code, Some(131056));
    assert_eq!(err.error.kind.as_deref(), Some("OAuthException"));
    assert!(
        err.error
            .error_data
            .as_ref()
            .unwrap()
            .details
            .as_deref()
            .unwrap()
            .starts_with("Message failed")
    );
    let back: ErrorAnswer = serde_json::from_value(serde_json::to_value(&err).unwrap()).unwrap();
    assert_eq!(back, err);
    // A token error has no error_data.
    let token: ErrorAnswer = serde_json::from_value(json!({"error": {"message": "Invalid OAuth access token - Cannot parse access token", "type": "OAuthException", "code": 190, "fbtrace_id": "A1"}})).unwrap();
    assert_eq!(token.error.code, Some(190));
    assert_eq!(token.error.error_data, None);
}

#[test]
fn signature_is_hex_hmac_sha256_with_the_app_secret() {
    // RFC 4231-style reference value (HMAC-SHA256, key "key").
    assert_eq!(
        signature(b"key", b"The quick brown fox jumps over the lazy dog"),
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );
}

#[test]
fn verify_takes_only_the_right_signature_of_the_same_bytes() {
    let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
    let good = signature(b"app-secret", body);
    assert!(verify(b"app-secret", body, Some(&good)));
    assert!(verify(
        b"app-secret",
        body,
        Some(&good.to_uppercase().replace("SHA256=", "sha256="))
    ));
    assert!(
        !verify(b"app-secret", &body[1..], Some(&good)),
        "another body"
    );
    assert!(
        !verify(b"other-secret", body, Some(&good)),
        "another secret"
    );
    assert!(!verify(b"app-secret", body, None), "no header");
    assert!(!verify(b"app-secret", body, Some("")));
    assert!(!verify(
        b"app-secret",
        body,
        Some(&good.replace("sha256=", "sha1="))
    ));
    assert!(
        !verify(b"app-secret", body, Some(&good[..good.len() - 1])),
        "odd hex"
    );
    assert!(
        !verify(b"app-secret", body, Some(&good[..good.len() - 2])),
        "short"
    );
    assert!(
        !verify(
            b"app-secret",
            body,
            Some(&format!("{}z", &good[..good.len() - 1]))
        ),
        "not hex"
    );
    assert!(
        !verify(b"", body, Some(&signature(b"", body))),
        "empty secret"
    );
}
