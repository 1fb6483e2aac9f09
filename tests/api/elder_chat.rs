//! SPEC §9: the elder's chat comes back to the order — Meta's verification
//! handshake, signed inbound messages, attribution through the token, the one
//! reply per new link, and the delivery states of our own messages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderlink::clock::now_ms;
use serde_json::{json, Value};

use crate::support::app::APP_SECRET;
use crate::support::meta::*;
use crate::support::*;

const ORDER: &str = "ORD-1042";
const CUSTOMER: &str = "919876543210";

fn inbound_count(app: &TestApp) -> i64 {
    app.count("SELECT COUNT(*) FROM inbound_messages")
}

// The arranges most tests here share. Each returns the fake Graph API with the
// app: bind it to a name (`_graph` when unused), since dropping it stops the fake.

/// The fake Graph API, an app made by `app_of`, and ORDER paid with its
/// confirmation and link accepted by Meta.
fn order_paid_in(app_of: impl FnOnce(&FakeGraph) -> TestApp) -> (FakeGraph, TestApp, Processed) {
    let graph = FakeGraph::start();
    let app = app_of(&graph);
    let processed = pay_and_send(&app, ORDER);
    (graph, app, processed)
}

/// [`order_paid_in`] the app with the elder reply and the verify token set.
fn order_paid() -> (FakeGraph, TestApp, Processed) {
    order_paid_in(app_with_reply)
}

/// [`order_paid_in`], then ELDER_A (profile `name`) sends the prefilled text
/// and gets the one reply: an elder linked by number.
fn elder_a_linked_in(
    app_of: impl FnOnce(&FakeGraph) -> TestApp,
    name: &str,
) -> (FakeGraph, TestApp, Processed) {
    let (graph, app, processed) = order_paid_in(app_of);
    app.deliver(&prefilled_text_payload(
        ELDER_A,
        name,
        &fresh_wamid(),
        &processed,
    ));
    wait_for_replies(&graph, ELDER_A, 1);
    (graph, app, processed)
}

/// The id Meta gave ORDER's message of `kind` when it accepted it.
fn graph_id(app: &TestApp, kind: &str) -> String {
    app.outbox_row(ORDER, kind)
        .graph_message_id
        .unwrap_or_else(|| panic!("no graph message id for the {kind} of {ORDER}"))
}

/// The order a stored inbound message is attributed to; panics when the
/// message was not stored at all.
fn order_of(app: &TestApp, wamid: &str) -> Option<String> {
    inbound_row(app, wamid)
        .unwrap_or_else(|| panic!("message {wamid} is not stored"))
        .order_id
}

// ---------------------------------------------------------------- handshake

#[test]
fn verification_handshake_with_the_right_token_answers_the_challenge_as_plain_text() {
    // Arrange
    let graph = FakeGraph::start();
    let app = app_with_reply(&graph);

    // Act
    let resp = app.verify_webhook(&[
        ("hub.mode", "subscribe"),
        ("hub.verify_token", VERIFY_TOKEN),
        ("hub.challenge", "1158201444"),
    ]);

    // Assert
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body, "1158201444");
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "content-type {content_type:?}"
    );
}

#[test]
fn verification_handshake_is_refused_for_a_wrong_or_missing_token_or_a_wrong_mode() {
    let graph = FakeGraph::start();
    let app = app_with_reply(&graph);
    let near_miss = format!("{VERIFY_TOKEN}x");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "wrong token",
            vec![
                ("hub.mode", "subscribe"),
                ("hub.verify_token", "not-the-token"),
                ("hub.challenge", "42"),
            ],
        ),
        (
            "token with an extra character",
            vec![
                ("hub.mode", "subscribe"),
                ("hub.verify_token", &near_miss),
                ("hub.challenge", "42"),
            ],
        ),
        (
            "empty token",
            vec![
                ("hub.mode", "subscribe"),
                ("hub.verify_token", ""),
                ("hub.challenge", "42"),
            ],
        ),
        (
            "missing token",
            vec![("hub.mode", "subscribe"), ("hub.challenge", "42")],
        ),
        (
            "wrong mode",
            vec![
                ("hub.mode", "unsubscribe"),
                ("hub.verify_token", VERIFY_TOKEN),
                ("hub.challenge", "42"),
            ],
        ),
        (
            "missing mode",
            vec![("hub.verify_token", VERIFY_TOKEN), ("hub.challenge", "42")],
        ),
    ];

    for (what, query) in cases {
        let resp = app.verify_webhook(&query);

        assert_eq!(resp.status, 403, "{what}: {}", resp.body);
        assert_ne!(resp.body, "42", "{what}: the challenge was echoed");
    }
}

#[test]
fn verification_handshake_is_refused_when_no_verify_token_is_configured() {
    // Arrange: live mode, but WHATSAPP_VERIFY_TOKEN unset.
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .without("WHATSAPP_VERIFY_TOKEN")
        .spawn();

    for token in [VERIFY_TOKEN, "", "undefined"] {
        // Act
        let resp = app.verify_webhook(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", token),
            ("hub.challenge", "42"),
        ]);

        // Assert
        assert_eq!(resp.status, 403, "token {token:?}: {}", resp.body);
    }
    let resp = app.verify_webhook(&[("hub.mode", "subscribe"), ("hub.challenge", "42")]);
    assert_eq!(resp.status, 403, "no token at all: {}", resp.body);
}

// ---------------------------------------------------------------- signatures

#[test]
fn inbound_webhook_with_a_missing_or_wrong_signature_is_401_and_stores_nothing() {
    // Arrange: a body that would link an elder, were it accepted.
    let (graph, app, processed) = order_paid();
    let body = prefilled_text_payload(ELDER_A, "Asha", &fresh_wamid(), &processed).to_string();
    let right = meta_signature(APP_SECRET, &body);
    let right_hex = right.strip_prefix("sha256=").unwrap().to_string();
    let mut flipped = right.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == '0' { '1' } else { '0' });
    let other_body = meta_signature(APP_SECRET, &format!("{body} "));
    let other_secret = meta_signature("some-other-app-secret", &body);
    let truncated = right[..right.len() - 2].to_string();
    let sha1 = format!("sha1={right_hex}");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no header", vec![]),
        ("empty header", vec![("X-Hub-Signature-256", "")]),
        ("bare prefix", vec![("X-Hub-Signature-256", "sha256=")]),
        (
            "last hex digit changed",
            vec![("X-Hub-Signature-256", &flipped)],
        ),
        (
            "signature of another body",
            vec![("X-Hub-Signature-256", &other_body)],
        ),
        (
            "another secret",
            vec![("X-Hub-Signature-256", &other_secret)],
        ),
        ("truncated", vec![("X-Hub-Signature-256", &truncated)]),
        (
            "wrong algorithm prefix",
            vec![("X-Hub-Signature-256", &sha1)],
        ),
        (
            "right MAC in the SHA-1 header",
            vec![("X-Hub-Signature", &right)],
        ),
        ("not hex", vec![("X-Hub-Signature-256", "sha256=zzzz")]),
    ];

    for (what, headers) in cases {
        // Act
        let resp = app.post_whatsapp_with_headers(&body, &headers);

        // Assert
        assert_eq!(resp.status, 401, "{what}: {}", resp.body);
    }
    assert_eq!(inbound_count(&app), 0, "inbound_messages rows");
    assert_eq!(app.count("SELECT COUNT(*) FROM contact_links"), 0);
    assert_eq!(consumed_at(&app, &processed.token), None);
    app.assert_sends_settled(&graph, 2);
}

#[test]
fn validly_signed_bodies_that_are_not_understood_are_still_answered_200() {
    // Arrange
    let graph = FakeGraph::start();
    let app = app_with_reply(&graph);
    let bodies = [
        "not json at all".to_string(),
        String::new(),
        "{}".to_string(),
        "[]".to_string(),
        "null".to_string(),
        r#"{"object":"page","entry":[{"id":"1","time":1,"messaging":[]}]}"#.to_string(),
        json!({"object": "whatsapp_business_account", "entry": "nope"}).to_string(),
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1"}]}).to_string(),
        envelope(json!({"messaging_product": "whatsapp"})).to_string(),
        envelope(json!({"messages": [{"type": "text"}], "statuses": [{"id": 5}]})).to_string(),
        envelope(json!({"messages": "x", "statuses": {"a": 1}})).to_string(),
        envelope(json!({"messages": [{"from": 919811111111u64, "id": ["x"], "type": 7}]}))
            .to_string(),
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
            {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}
        ]}]})
        .to_string(),
    ];

    for body in &bodies {
        // Act
        let resp = app.post_whatsapp(body);

        // Assert
        assert_eq!(resp.status, 200, "body {body:?}: {}", resp.body);
    }
    assert_eq!(inbound_count(&app), 0);
    // And the app still takes a good message afterwards.
    let wamid = fresh_wamid();
    app.deliver(&text_payload(STRANGER, "Sam", &wamid, "hello"));
    assert!(inbound_row(&app, &wamid).is_some());
}

#[test]
fn unsigned_inbound_webhook_is_accepted_in_sandbox_mode_without_an_app_secret() {
    // Arrange: sandbox mode (no Graph token, no secrets).
    let graph = FakeGraph::start();
    let app = TestApp::builder(&graph)
        .without("WHATSAPP_TOKEN")
        .without("PAYMENT_WEBHOOK_SECRET")
        .without("WHATSAPP_APP_SECRET")
        .without("WHATSAPP_PHONE_NUMBER_ID")
        .spawn();
    let wamid = fresh_wamid();

    // Act
    let resp = app.post_whatsapp_with_headers(
        &text_payload(STRANGER, "Sam", &wamid, "hello").to_string(),
        &[],
    );

    // Assert
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        inbound_row(&app, &wamid).map(|r| r.body),
        Some(Some("hello".into()))
    );
}

// ---------------------------------------------------------------- attribution

#[test]
fn text_with_the_token_links_the_sender_consumes_the_token_and_sends_one_reply() {
    // Arrange
    let (graph, app, processed) = order_paid();
    let wamid = fresh_wamid();
    let text = prefilled_text(&processed.whatsapp_link);
    let before = now_ms();

    let mut payload = text_payload(ELDER_A, "Asha Devi", &wamid, &text);
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = json!("1764150000");

    // Act
    app.deliver(&payload);

    // Assert: stored with sender, profile name, type, text, attributed.
    let row = inbound_row(&app, &wamid).expect("the message is stored");
    assert_eq!(
        row,
        InboundRow {
            wa_id: ELDER_A.into(),
            profile_name: Some("Asha Devi".into()),
            message_type: "text".into(),
            body: Some(text.clone()),
            order_id: Some(ORDER.into()),
        }
    );
    let sent_at: Option<i64> = app
        .db()
        .query_row(
            "SELECT sent_at FROM inbound_messages WHERE wamid = $1",
            [&wamid],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        matches!(sent_at, Some(1_764_150_000 | 1_764_150_000_000)),
        "Meta's timestamp is not stored: {sent_at:?}"
    );
    assert_eq!(linked_senders(&app, ORDER), vec![ELDER_A.to_string()]);
    let consumed = consumed_at(&app, &processed.token).expect("consumed_at is set");
    assert!(
        consumed >= before - 1000 && consumed <= now_ms() + 1000,
        "consumed_at {consumed} is not now"
    );
    // One reply, to the elder, with {order_id} replaced, through the outbox.
    let replies = wait_for_replies(&graph, ELDER_A, 1);
    assert_eq!(replies.len(), 1);
    let reply = &replies[0];
    assert_eq!(reply.message_type(), Some("text"));
    assert_eq!(
        reply.body.pointer("/text/body").and_then(|v| v.as_str()),
        Some(reply_text_for(ORDER).as_str())
    );
    assert_eq!(
        reply.header("authorization"),
        Some("Bearer test-graph-token")
    );
    wait_until("the elder reply to be recorded as sent", PATIENCE, || {
        elder_replies(&app, ORDER) == vec![(ELDER_A.to_string(), "sent".to_string())]
    });
    app.assert_sends_settled(&graph, 3);
}

#[test]
fn the_same_wamid_delivered_three_times_is_stored_once_and_replied_to_once() {
    // Arrange
    let (graph, app, processed) = order_paid();
    let wamid = fresh_wamid();
    let payload = prefilled_text_payload(ELDER_A, "Asha", &wamid, &processed);

    // Act: Meta re-delivers, once right away and once after the reply went out.
    app.deliver(&payload);
    app.deliver(&payload);
    wait_for_replies(&graph, ELDER_A, 1);
    app.deliver(&payload);

    // Assert
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM inbound_messages WHERE wamid = '{wamid}'"
        )),
        1
    );
    assert_eq!(inbound_count(&app), 1);
    assert_eq!(linked_senders(&app, ORDER), vec![ELDER_A.to_string()]);
    app.assert_sends_settled(&graph, 3);
    assert_eq!(requests_to(&graph, ELDER_A).len(), 1);
    assert_eq!(elder_replies(&app, ORDER).len(), 1);
}

#[test]
fn the_same_wamid_delivered_concurrently_is_stored_once_and_replied_to_once() {
    // Arrange
    let (graph, app, processed) = order_paid();
    let body = prefilled_text_payload(ELDER_A, "Asha", &fresh_wamid(), &processed).to_string();

    // Act: Meta delivers it eight times at once.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| assert_eq!(app.post_whatsapp(&body).status, 200));
        }
    });

    // Assert
    wait_for_replies(&graph, ELDER_A, 1);
    app.assert_sends_settled(&graph, 3);
    assert_eq!(inbound_count(&app), 1);
    assert_eq!(linked_senders(&app, ORDER), vec![ELDER_A.to_string()]);
}

#[test]
fn token_in_upper_case_is_attributed_to_its_order() {
    // Arrange
    let (graph, app, processed) = order_paid();
    let wamid = fresh_wamid();

    // Act
    app.deliver(&text_payload(
        ELDER_A,
        "Asha",
        &wamid,
        &format!("HELLO, MY TOKEN IS {}", processed.token.to_uppercase()),
    ));

    // Assert
    assert_eq!(order_of(&app, &wamid), Some(ORDER.to_string()));
    assert_eq!(linked_senders(&app, ORDER), vec![ELDER_A.to_string()]);
    assert!(consumed_at(&app, &processed.token).is_some());
    wait_for_replies(&graph, ELDER_A, 1);
}

#[test]
fn token_inside_other_words_is_attributed_to_its_order() {
    // Arrange: two orders, each token glued to other characters.
    let graph = FakeGraph::start();
    let app = app_with_reply(&graph);
    let first = pay_and_send(&app, "ORD-1");
    let second = pay_and_send(&app, "ORD-2");
    let (wamid_a, wamid_b) = (fresh_wamid(), fresh_wamid());

    // Act
    app.deliver(&text_payload(
        ELDER_A,
        "Asha",
        &wamid_a,
        &format!("xx{}yy", first.token),
    ));
    app.deliver(&text_payload(
        ELDER_B,
        "Bala",
        &wamid_b,
        &format!("order?token={}&lang=hi", second.token.to_uppercase()),
    ));

    // Assert
    assert_eq!(order_of(&app, &wamid_a), Some("ORD-1".to_string()));
    assert_eq!(order_of(&app, &wamid_b), Some("ORD-2".to_string()));
    assert_eq!(linked_senders(&app, "ORD-1"), vec![ELDER_A.to_string()]);
    assert_eq!(linked_senders(&app, "ORD-2"), vec![ELDER_B.to_string()]);
    assert!(consumed_at(&app, &first.token).is_some());
    assert!(consumed_at(&app, &second.token).is_some());
}

#[test]
fn expired_token_is_recorded_but_links_nothing_and_gets_no_reply() {
    // Arrange: the token's lifetime is over.
    let (graph, app, processed) = order_paid();
    let changed = app
        .db_rw()
        .execute(
            "UPDATE whatsapp_tokens SET expires_at = $1 WHERE token = $2",
            orderlink::db::sql::params![now_ms() - 1000, processed.token],
        )
        .expect("expire the token");
    assert_eq!(changed, 1);
    let wamid = fresh_wamid();
    let text = prefilled_text(&processed.whatsapp_link);

    // Act
    app.deliver(&text_payload(ELDER_A, "Asha", &wamid, &text));

    // Assert
    let row = inbound_row(&app, &wamid).expect("the message is still stored");
    assert_eq!(row.body.as_deref(), Some(text.as_str()));
    assert_eq!(
        row.order_id, None,
        "an expired token attributed the message"
    );
    assert!(linked_senders(&app, ORDER).is_empty());
    assert!(elder_replies(&app, ORDER).is_empty());
    app.assert_sends_settled(&graph, 2);
    // A follow-up is not attributed either: the sender was never linked.
    let follow_up = fresh_wamid();
    app.deliver(&text_payload(ELDER_A, "Asha", &follow_up, "hello?"));
    assert_eq!(inbound_row(&app, &follow_up).and_then(|r| r.order_id), None);
}

#[test]
fn a_second_elder_on_the_same_token_gets_a_link_and_a_reply_of_their_own() {
    // Arrange: the first elder is already linked.
    let (graph, app, processed) = elder_a_linked_in(app_with_reply, "Asha");
    let first_use = consumed_at(&app, &processed.token).expect("consumed_at");

    // Act
    let wamid = fresh_wamid();
    app.deliver(&prefilled_text_payload(ELDER_B, "Bala", &wamid, &processed));

    // Assert
    assert_eq!(order_of(&app, &wamid), Some(ORDER.to_string()));
    assert_eq!(
        linked_senders(&app, ORDER),
        vec![ELDER_A.to_string(), ELDER_B.to_string()]
    );
    let replies = wait_for_replies(&graph, ELDER_B, 1);
    assert_eq!(
        replies[0]
            .body
            .pointer("/text/body")
            .and_then(|v| v.as_str()),
        Some(reply_text_for(ORDER).as_str())
    );
    app.assert_sends_settled(&graph, 4);
    assert_eq!(requests_to(&graph, ELDER_A).len(), 1);
    assert_eq!(
        consumed_at(&app, &processed.token),
        Some(first_use),
        "consumed_at is the first use"
    );
}

#[test]
fn follow_up_without_a_token_from_a_linked_sender_goes_to_their_most_recently_linked_order() {
    // Arrange: two orders; the elder links to the newer order first, then the older
    // one, so "most recently linked" differs from "newest order" and "first link".
    let graph = FakeGraph::start();
    let app = app_with_reply(&graph);
    let older = pay_and_send(&app, "ORD-OLD");
    let newer = pay_and_send(&app, "ORD-NEW");
    app.deliver(&prefilled_text_payload(
        ELDER_A,
        "Asha",
        &fresh_wamid(),
        &newer,
    ));
    wait_for_replies(&graph, ELDER_A, 1);
    app.deliver(&prefilled_text_payload(
        ELDER_A,
        "Asha",
        &fresh_wamid(),
        &older,
    ));
    wait_for_replies(&graph, ELDER_A, 2);
    let wamid = fresh_wamid();

    // Act
    app.deliver(&text_payload(
        ELDER_A,
        "Asha",
        &wamid,
        "When will it arrive?",
    ));

    // Assert
    let row = inbound_row(&app, &wamid).expect("follow-up stored");
    assert_eq!(row.order_id.as_deref(), Some("ORD-OLD"));
    assert_eq!(row.body.as_deref(), Some("When will it arrive?"));
    // No new link and no further reply for a follow-up.
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM contact_links l JOIN contacts c ON c.id = l.contact_id \
             WHERE c.wa_id = '919811111111'"
        ),
        2
    );
    app.assert_sends_settled(&graph, 6);
}

#[test]
fn message_without_a_token_from_an_unknown_sender_is_stored_unattributed() {
    // Arrange: an order exists, and a linked elder, but the stranger is neither.
    let (graph, app, _processed) = elder_a_linked_in(app_with_reply, "Asha");
    let (plain, unknown_uuid) = (fresh_wamid(), fresh_wamid());

    // Act
    app.deliver(&text_payload(
        STRANGER,
        "Sam",
        &plain,
        "Do you ship to Leeds?",
    ));
    app.deliver(&text_payload(
        STRANGER,
        "Sam",
        &unknown_uuid,
        &format!("Token: {}", uuid::Uuid::new_v4()),
    ));

    // Assert
    for wamid in [&plain, &unknown_uuid] {
        let row = inbound_row(&app, wamid).expect("stored");
        assert_eq!(row.wa_id, STRANGER);
        assert_eq!(row.profile_name.as_deref(), Some("Sam"));
        assert_eq!(row.order_id, None);
    }
    assert_eq!(linked_senders(&app, ORDER), vec![ELDER_A.to_string()]);
    app.assert_sends_settled(&graph, 3);
    assert!(requests_to(&graph, STRANGER).is_empty());
}

#[test]
fn non_text_messages_are_stored_with_their_type_and_acknowledged() {
    // Arrange: one delivery carrying the kinds of messages elders really send.
    let graph = FakeGraph::start();
    let app = app_with_reply(&graph);
    let kinds = [
        (
            "image",
            json!({"caption": "the parcel", "mime_type": "image/jpeg", "sha256": "abc", "id": "1003"}),
        ),
        (
            "reaction",
            json!({"message_id": "wamid.HBgMOLD", "emoji": "\u{1F44D}"}),
        ),
        (
            "location",
            json!({"latitude": 12.9716, "longitude": 77.5946, "name": "Home", "address": "MG Road"}),
        ),
        (
            "interactive",
            json!({"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}}),
        ),
        ("button", json!({"payload": "Track", "text": "Track"})),
        (
            "audio",
            json!({"mime_type": "audio/ogg; codecs=opus", "id": "1004", "voice": true}),
        ),
        (
            "sticker",
            json!({"mime_type": "image/webp", "id": "1005", "animated": false}),
        ),
        (
            "unsupported",
            json!({"errors": [{"code": 131051, "title": "Message type unknown"}]}),
        ),
    ];
    let messages: Vec<_> = kinds
        .iter()
        .map(|(kind, content)| (*kind, fresh_wamid(), content.clone()))
        .collect();
    let payload = inbound_payload(
        &[(STRANGER, "Sam")],
        messages
            .iter()
            .map(|(kind, wamid, content)| message_of_type(STRANGER, wamid, kind, content.clone()))
            .collect(),
    );

    // Act
    let resp = app.post_whatsapp(&payload.to_string());

    // Assert
    assert_eq!(resp.status, 200, "{}", resp.body);
    for (kind, wamid, _) in &messages {
        let row = inbound_row(&app, wamid).unwrap_or_else(|| panic!("{kind} was dropped"));
        assert_eq!(row.message_type, *kind);
        assert_eq!(row.wa_id, STRANGER);
        assert_eq!(row.profile_name.as_deref(), Some("Sam"));
    }
    assert_eq!(inbound_count(&app), kinds.len() as i64);
}

// ---------------------------------------------------------------- statuses

#[test]
fn statuses_arriving_read_sent_delivered_leave_the_confirmation_read() {
    // Arrange
    let (_graph, app, _processed) = order_paid();
    let confirmation = graph_id(&app, "confirmation");
    let link = graph_id(&app, "link");

    // Act: one webhook each for the confirmation; the link's in one body, out of order.
    for s in ["read", "sent", "delivered"] {
        app.deliver(&statuses_payload(vec![status(&confirmation, s, CUSTOMER)]));
    }
    app.deliver(&statuses_payload(vec![
        status(&link, "delivered", CUSTOMER),
        status(&link, "sent", CUSTOMER),
    ]));

    // Assert
    assert_eq!(delivery_of(&app, &confirmation).0.as_deref(), Some("read"));
    assert_eq!(delivery_of(&app, &link).0.as_deref(), Some("delivered"));
    // Each status also moves it forward when it arrives in order.
    app.deliver(&statuses_payload(vec![status(&link, "read", CUSTOMER)]));
    assert_eq!(delivery_of(&app, &link).0.as_deref(), Some("read"));
    // And a late `failed` does not undo a delivery Meta already reported.
    app.deliver(&statuses_payload(vec![failed_status(
        &confirmation,
        CUSTOMER,
        131026,
        "Message undeliverable",
    )]));
    assert_eq!(delivery_of(&app, &confirmation).0.as_deref(), Some("read"));
}

#[test]
fn failed_status_records_metas_error_code_and_title() {
    // Arrange
    let (_graph, app, _processed) = order_paid();
    let link = graph_id(&app, "link");

    // Act
    app.deliver(&statuses_payload(vec![
        status(&link, "sent", CUSTOMER),
        failed_status(&link, CUSTOMER, 131026, "Message undeliverable"),
    ]));

    // Assert
    let (state, error) = delivery_of(&app, &link);
    assert_eq!(state.as_deref(), Some("failed"));
    let error = error.expect("the error is recorded");
    assert!(error.contains("131026"), "error {error:?} lacks the code");
    assert!(
        error.contains("Message undeliverable"),
        "error {error:?} lacks the title"
    );
    // The confirmation is untouched.
    let confirmation = graph_id(&app, "confirmation");
    assert_ne!(
        delivery_of(&app, &confirmation).0.as_deref(),
        Some("failed")
    );
}

#[test]
fn status_for_an_unknown_message_id_is_acknowledged_and_changes_nothing() {
    // Arrange
    let (_graph, app, _processed) = order_paid();
    let confirmation = graph_id(&app, "confirmation");
    let before = delivery_of(&app, &confirmation);

    // Act
    let resp = app.post_whatsapp(
        &statuses_payload(vec![
            status("wamid.NEVER-SENT-BY-US", "read", "15550001111"),
            failed_status("wamid.ALSO-UNKNOWN", "15550001111", 131026, "Undeliverable"),
        ])
        .to_string(),
    );

    // Assert
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(delivery_of(&app, &confirmation), before);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE delivery_status IN ('read', 'failed')"),
        0
    );
}

#[test]
fn status_that_beats_the_send_response_is_kept_and_applied_when_the_id_is_recorded() {
    // Arrange: the fake holds the confirmation's answer until the test lets it go,
    // and then accepts it under an id the test knows in advance.
    let graph = FakeGraph::start();
    let known_id = format!("wamid.EARLY{}", uuid::Uuid::new_v4().simple());
    let arrived = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    {
        let (arrived, release, known_id) = (arrived.clone(), release.clone(), known_id.clone());
        graph.respond_with(move |r| {
            if r.message_type() != Some("template") {
                return None;
            }
            arrived.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(20);
            while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            Some(Reply::Raw {
                status: 200,
                body: json!({
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": CUSTOMER, "wa_id": CUSTOMER}],
                    "messages": [{"id": known_id}]
                })
                .to_string(),
            })
        });
    }
    let app = TestApp::builder(&graph)
        .env("ELDER_REPLY_TEXT", REPLY_TEXT)
        .env("WHATSAPP_TIMEOUT_MS", "30000")
        .spawn();
    pay(&app, &payment_event(ORDER));
    wait_until("the confirmation to reach the fake", PATIENCE, || {
        arrived.load(Ordering::SeqCst)
    });

    // Act: Meta's statuses for that id arrive while the send call is still open.
    let resp = app.post_whatsapp(
        &statuses_payload(vec![
            status(&known_id, "delivered", CUSTOMER),
            status(&known_id, "sent", CUSTOMER),
        ])
        .to_string(),
    );
    let row_meanwhile = app.outbox_row(ORDER, "confirmation");
    release.store(true, Ordering::SeqCst);

    // Assert
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_ne!(
        row_meanwhile.status, "sent",
        "the send had not returned yet: {row_meanwhile:?}"
    );
    assert_eq!(row_meanwhile.graph_message_id, None);
    let row = app.wait_for_outbox_status(ORDER, "confirmation", "sent", PATIENCE);
    assert_eq!(row.graph_message_id.as_deref(), Some(known_id.as_str()));
    wait_until("the early status to be applied", PATIENCE, || {
        delivery_of(&app, &known_id).0.as_deref() == Some("delivered")
    });
}

// ---------------------------------------------------------------- the reply

#[test]
fn without_elder_reply_text_a_newly_linked_elder_is_linked_but_sent_nothing() {
    // Arrange: ELDER_REPLY_TEXT unset.
    let (graph, app, processed) =
        order_paid_in(|graph| TestApp::builder(graph).without("ELDER_REPLY_TEXT").spawn());

    // Act
    app.deliver(&prefilled_text_payload(
        ELDER_A,
        "Asha",
        &fresh_wamid(),
        &processed,
    ));

    // Assert
    assert_eq!(linked_senders(&app, ORDER), vec![ELDER_A.to_string()]);
    assert!(elder_replies(&app, ORDER).is_empty());
    app.assert_sends_settled(&graph, 2);
}

#[test]
fn elder_reply_refused_transiently_by_meta_is_retried_and_delivered_once() {
    // Arrange: the first attempt at the reply meets a 503, the next one succeeds.
    let (graph, app, processed) = order_paid();
    graph.script([Reply::status(503)]);

    // Act
    app.deliver(&prefilled_text_payload(
        ELDER_A,
        "Asha",
        &fresh_wamid(),
        &processed,
    ));

    // Assert
    wait_for_replies(&graph, ELDER_A, 1);
    wait_until("the reply to be recorded as sent", PATIENCE, || {
        elder_replies(&app, ORDER) == vec![(ELDER_A.to_string(), "sent".to_string())]
    });
    app.assert_sends_settled(&graph, 4);
    let to_elder = requests_to(&graph, ELDER_A);
    assert_eq!(to_elder.len(), 2);
    assert!(!to_elder[0].was_accepted());
    assert_eq!(
        to_elder[0].body, to_elder[1].body,
        "the retry is the same message"
    );
}

// ---------------------------------------------------------------- done means

/// The wa.me link inside the link message the customer received for `order_id`.
fn link_the_customer_received(graph: &FakeGraph, order_id: &str) -> String {
    let link_message = graph
        .accepted_of_type("text")
        .into_iter()
        .find(|r| r.order_id() == Some(order_id) && r.body["to"] == CUSTOMER)
        .unwrap_or_else(|| panic!("no link message for {order_id}"));
    let text = link_message.body["text"]["body"]
        .as_str()
        .expect("link text")
        .to_string();
    let start = text
        .find("https://wa.me/")
        .expect("a wa.me link in the text");
    text[start..].split_whitespace().next().unwrap().to_string()
}

#[test]
fn done_means_two_elders_from_one_forwarded_link_show_up_linked_replied_once_and_delivery_states_shown(
) {
    // Arrange: the shop with replies and the admin API on; two paid orders.
    const ADMIN: &str = "done-means-admin-token";
    let (graph, app, processed) = order_paid_in(|graph| {
        TestApp::builder(graph)
            .env("ELDER_REPLY_TEXT", REPLY_TEXT)
            .env("ADMIN_TOKEN", ADMIN)
            .spawn()
    });
    let other = pay_and_send(&app, "ORD-2000");
    let link = link_the_customer_received(&graph, ORDER);
    assert_eq!(link, processed.whatsapp_link);
    let prefilled = prefilled_text(&link);
    assert_eq!(
        prefilled,
        format!(
            "Hi, I\u{2019}m contacting on behalf of order {ORDER}. Token: {}",
            processed.token
        )
    );

    // Act: the customer forwards the link; each elder sends the prefilled message
    // (Meta re-delivers the first one), and Meta reports the customer's deliveries.
    let wamid_a = fresh_wamid();
    let from_a = text_payload(ELDER_A, "Asha Devi", &wamid_a, &prefilled);
    app.deliver(&from_a);
    app.deliver(&text_payload(
        ELDER_B,
        "Bala Krishnan",
        &fresh_wamid(),
        &prefilled,
    ));
    app.deliver(&from_a);
    wait_for_replies(&graph, ELDER_A, 1);
    wait_for_replies(&graph, ELDER_B, 1);
    let confirmation_id = graph_id(&app, "confirmation");
    let link_id = graph_id(&app, "link");
    app.deliver(&statuses_payload(vec![
        status(&confirmation_id, "delivered", CUSTOMER),
        status(&link_id, "sent", CUSTOMER),
    ]));
    app.deliver(&statuses_payload(vec![
        status(&confirmation_id, "read", CUSTOMER),
        status(&confirmation_id, "sent", CUSTOMER),
        status(&link_id, "delivered", CUSTOMER),
    ]));
    wait_until("both replies recorded as sent", PATIENCE, || {
        elder_replies(&app, ORDER)
            == vec![
                (ELDER_A.to_string(), "sent".to_string()),
                (ELDER_B.to_string(), "sent".to_string()),
            ]
    });
    let resp = app.admin(
        "GET",
        &format!("/admin/orders/{ORDER}"),
        Some(&format!("Bearer {ADMIN}")),
    );

    // Assert: two linked contacts on the right order, each replied to once.
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        !resp.body.to_lowercase().contains(&processed.token),
        "full token in the admin view"
    );
    let view = resp.json();
    assert_eq!(view["order"]["id"], ORDER);
    let mut contacts: Vec<&str> = view["contacts"]
        .as_array()
        .unwrap_or_else(|| panic!("no contacts[] in {view}"))
        .iter()
        .map(|c| c["wa_id"].as_str().unwrap_or_default())
        .collect();
    contacts.sort();
    assert_eq!(contacts, vec![ELDER_A, ELDER_B], "{view}");
    let messages = view["messages"].as_array().expect("messages[]");
    for elder in [ELDER_A, ELDER_B] {
        let replies: Vec<&Value> = messages
            .iter()
            .filter(|m| m["kind"] == "elder_reply" && m["recipient"] == elder)
            .collect();
        assert_eq!(replies.len(), 1, "replies to {elder} in {view}");
        assert_eq!(replies[0]["status"], "sent", "{view}");
        let sent = requests_to(&graph, elder);
        assert_eq!(sent.len(), 1, "messages sent to {elder}");
        assert_eq!(sent[0].body["text"]["body"], reply_text_for(ORDER).as_str());
    }
    // Confirmation and link as Meta reported them.
    let delivery = |kind: &str| {
        messages
            .iter()
            .find(|m| m["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {view}"))["delivery_status"]
            .clone()
    };
    assert_eq!(delivery("confirmation"), "read", "{view}");
    assert_eq!(delivery("link"), "delivered", "{view}");
    assert_eq!(view["funnel"]["confirmation_delivered"], true, "{view}");
    assert_eq!(view["funnel"]["link_delivered"], true, "{view}");
    assert_eq!(view["funnel"]["elder_linked"], true, "{view}");
    // Nothing landed on the other order, and nobody got a second message.
    let other_view = app
        .admin(
            "GET",
            "/admin/orders/ORD-2000",
            Some(&format!("Bearer {ADMIN}")),
        )
        .json();
    assert_eq!(
        other_view["contacts"].as_array().map(Vec::len),
        Some(0),
        "{other_view}"
    );
    assert!(linked_senders(&app, &other.order_id).is_empty());
    app.assert_sends_settled(&graph, 6);
}

// ---------------------------------------------------------------- usernames
//
// SPEC §9 "Identity": an elder who adopted a WhatsApp username reaches us
// with a business-scoped user id (BSUID) and no phone number. Payload
// shapes: see the usernames section of `support/meta.rs` for their sources.

const ADMIN: &str = "usernames-admin-token";

fn app_with_reply_and_admin(graph: &FakeGraph) -> TestApp {
    TestApp::builder(graph)
        .env("ELDER_REPLY_TEXT", REPLY_TEXT)
        .env("ADMIN_TOKEN", ADMIN)
        .spawn()
}

fn admin_get(app: &TestApp, path: &str) -> Resp {
    app.admin("GET", path, Some(&format!("Bearer {ADMIN}")))
}

/// The arrange of most username-only tests: [`order_paid_in`], then the
/// username-only elder linked by the token and replied to once.
fn username_elder_linked_in(app_of: impl FnOnce(&FakeGraph) -> TestApp) -> (FakeGraph, TestApp) {
    let (graph, app, processed) = order_paid_in(app_of);
    app.deliver(&username_prefilled_text_payload(
        ELDER_BSUID,
        "Asha Devi",
        &fresh_wamid(),
        &processed,
    ));
    wait_for_user_replies(&graph, ELDER_BSUID, 1);
    (graph, app)
}

/// Waits until `n` requests addressed to the BSUID `user_id` were accepted by the fake.
fn wait_for_user_replies(graph: &FakeGraph, user_id: &str, n: usize) -> Vec<RecordedRequest> {
    graph.wait_for(
        &format!("{n} accepted message(s) to {user_id}"),
        PATIENCE,
        |all| {
            all.iter()
                .filter(|r| {
                    r.body.get("recipient").and_then(Value::as_str) == Some(user_id)
                        && r.was_accepted()
                })
                .count()
                >= n
        },
    );
    requests_to_user(graph, user_id)
}

/// `(wa_id, user_id)` of every contact, sorted.
fn contacts(app: &TestApp) -> Vec<(Option<String>, Option<String>)> {
    let db = app.db();
    let mut stmt = db
        .prepare("SELECT wa_id, user_id FROM contacts ORDER BY wa_id, user_id")
        .unwrap();

    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn username_only_elder_is_linked_by_token_and_replied_to_at_their_bsuid() {
    // Arrange
    let (graph, app, processed) = order_paid_in(app_with_reply_and_admin);
    let wamid = fresh_wamid();

    // Act: the elder, who hides their number behind a username, sends the prefilled text.
    app.deliver(&username_prefilled_text_payload(
        ELDER_BSUID,
        "Asha Devi",
        &wamid,
        &processed,
    ));

    // Assert: stored, attributed, linked, the token consumed ...
    let row = inbound_row(&app, &wamid).expect("the message is stored");
    assert_eq!(row.wa_id, ELDER_BSUID);
    assert_eq!(row.profile_name.as_deref(), Some("Asha Devi"));
    assert_eq!(row.order_id.as_deref(), Some(ORDER));
    assert_eq!(linked_senders(&app, ORDER), vec![ELDER_BSUID.to_string()]);
    assert!(consumed_at(&app, &processed.token).is_some());
    // ... and the one reply reaches Meta addressed by `recipient`, exactly.
    let replies = wait_for_user_replies(&graph, ELDER_BSUID, 1);
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "recipient": ELDER_BSUID,
            "type": "text",
            "text": {"preview_url": true, "body": reply_text_for(ORDER)},
            "biz_opaque_callback_data": ORDER
        })
    );
    // The BSUID is personal data: never whole in the log.
    assert!(
        !app.logs().contains("1648738043044942"),
        "a whole BSUID reached the log"
    );
}

#[test]
fn follow_up_from_a_username_only_elder_goes_to_their_order_without_a_second_reply() {
    // Arrange
    let (graph, app) = username_elder_linked_in(app_with_reply);
    let wamid = fresh_wamid();

    // Act
    app.deliver(&username_text_payload(
        ELDER_BSUID,
        "Asha Devi",
        &wamid,
        "Has it shipped yet?",
    ));

    // Assert
    let row = inbound_row(&app, &wamid).expect("follow-up stored");
    assert_eq!(row.order_id.as_deref(), Some(ORDER));
    assert_eq!(row.body.as_deref(), Some("Has it shipped yet?"));
    app.assert_sends_settled(&graph, 3);
}

#[test]
fn status_of_the_reply_to_a_bsuid_recipient_is_applied_with_its_pricing() {
    // Arrange: the username-only elder was replied to.
    let (_graph, app) = username_elder_linked_in(app_with_reply);
    app.wait_for_outbox_status(ORDER, "elder_reply", "sent", PATIENCE);
    let reply_id = graph_id(&app, "elder_reply");

    // Act: Meta's statuses name the recipient by BSUID only.
    app.deliver(&statuses_payload(vec![
        bsuid_status(&reply_id, "sent", ELDER_BSUID),
        bsuid_status(&reply_id, "delivered", ELDER_BSUID),
    ]));

    // Assert
    assert_eq!(delivery_of(&app, &reply_id).0.as_deref(), Some("delivered"));
    assert_eq!(
        pricing_of(&app, &reply_id),
        (Some(true), Some("service".to_string()))
    );
}

#[test]
fn a_contact_seen_with_both_ids_is_one_contact_found_by_either_in_the_admin_api() {
    // Arrange: the elder first writes as a username-only user and is linked.
    let (graph, app) = username_elder_linked_in(app_with_reply_and_admin);
    let wamid = fresh_wamid();

    // Act: later Meta shares the number too.
    app.deliver(&both_ids_text_payload(
        ELDER_A,
        ELDER_BSUID,
        "Asha Devi",
        &wamid,
        "Thank you!",
    ));

    // Assert: one contact holding both, the message on the same order, no new reply.
    assert_eq!(
        contacts(&app),
        vec![(Some(ELDER_A.to_string()), Some(ELDER_BSUID.to_string()))]
    );
    assert_eq!(order_of(&app, &wamid).as_deref(), Some(ORDER));
    app.assert_sends_settled(&graph, 3);
    for key in [ELDER_BSUID, ELDER_A, &format!("%2B{ELDER_A}")] {
        let resp = admin_get(&app, &format!("/admin/contacts/{key}"));
        assert_eq!(resp.status, 200, "{key}: {}", resp.body);
        let view = resp.json();
        assert_eq!(view["wa_id"], ELDER_A, "{view}");
        assert_eq!(view["user_id"], ELDER_BSUID, "{view}");
        assert_eq!(view["orders"][0]["order_id"], ORDER, "{view}");
        assert_eq!(view["messages"].as_array().map(Vec::len), Some(2), "{view}");
    }
    let order = admin_get(&app, &format!("/admin/orders/{ORDER}")).json();
    let listed = &order["contacts"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{order}");
    assert_eq!(listed[0]["wa_id"], ELDER_A, "{order}");
    assert_eq!(listed[0]["user_id"], ELDER_BSUID, "{order}");
    assert_eq!(
        listed[0]["replies"].as_array().map(Vec::len),
        Some(1),
        "{order}"
    );
    assert_eq!(
        listed[0]["messages"].as_array().map(Vec::len),
        Some(2),
        "{order}"
    );
}

#[test]
fn an_elder_linked_by_number_is_still_recognised_when_only_their_bsuid_arrives() {
    // Arrange: linked by number (as every elder was before usernames), then
    // one message carrying both ids.
    let (graph, app, _processed) = elder_a_linked_in(app_with_reply_and_admin, "Asha Devi");
    app.deliver(&both_ids_text_payload(
        ELDER_A,
        ELDER_BSUID,
        "Asha Devi",
        &fresh_wamid(),
        "Hello again",
    ));
    let wamid = fresh_wamid();

    // Act: the elder adopts a username; Meta stops sending the number.
    app.deliver(&username_text_payload(
        ELDER_BSUID,
        "Asha Devi",
        &wamid,
        "Is it delivered?",
    ));

    // Assert
    assert_eq!(order_of(&app, &wamid).as_deref(), Some(ORDER));
    assert_eq!(contacts(&app).len(), 1);
    app.assert_sends_settled(&graph, 3);
}

#[test]
fn unknown_contact_in_the_admin_api_is_404_without_the_whole_id_in_the_log() {
    // Arrange
    let graph = FakeGraph::start();
    let app = app_with_reply_and_admin(&graph);

    // Act
    let resp = admin_get(&app, &format!("/admin/contacts/{ELDER_BSUID}"));

    // Assert
    assert_eq!(resp.status, 404, "{}", resp.body);
    assert_eq!(resp.error_code(), "not_found");
    assert!(!resp.body.contains("1648738043044942"), "{}", resp.body);
}

#[test]
fn user_id_update_carries_the_links_over_to_the_new_bsuid() {
    // Arrange: a username-only elder linked to the order.
    let (graph, app) = username_elder_linked_in(app_with_reply_and_admin);
    let wamid = fresh_wamid();

    // Act: Meta reports the new BSUID; the elder writes with it.
    app.deliver(&user_id_update_payload(None, ELDER_BSUID, ELDER_NEW_BSUID));
    app.deliver(&username_text_payload(
        ELDER_NEW_BSUID,
        "Asha Devi",
        &wamid,
        "Any news?",
    ));

    // Assert: the follow-up lands on the order; no second reply; the admin
    // finds the contact by its new id.
    assert_eq!(order_of(&app, &wamid).as_deref(), Some(ORDER));
    assert_eq!(
        linked_senders(&app, ORDER),
        vec![ELDER_NEW_BSUID.to_string()]
    );
    app.assert_sends_settled(&graph, 3);
    let view = admin_get(&app, &format!("/admin/contacts/{ELDER_NEW_BSUID}")).json();
    assert_eq!(view["orders"][0]["order_id"], ORDER, "{view}");
    assert_eq!(
        admin_get(&app, &format!("/admin/contacts/{ELDER_BSUID}")).status,
        404
    );
}

#[test]
fn user_changed_number_carries_the_links_over_to_the_new_number() {
    // Arrange: an elder linked by number.
    const NEW_NUMBER: &str = "919833333333";
    let (graph, app, _processed) = elder_a_linked_in(app_with_reply, "Asha Devi");
    let wamid = fresh_wamid();

    // Act: Meta's system message, then a follow-up from the new number.
    app.deliver(&changed_number_payload(ELDER_A, NEW_NUMBER, &fresh_wamid()));
    app.deliver(&text_payload(
        NEW_NUMBER,
        "Asha Devi",
        &wamid,
        "New phone, same order?",
    ));

    // Assert
    assert_eq!(order_of(&app, &wamid).as_deref(), Some(ORDER));
    assert_eq!(linked_senders(&app, ORDER), vec![NEW_NUMBER.to_string()]);
    app.assert_sends_settled(&graph, 3);
}

#[test]
fn user_changed_user_id_system_message_carries_the_links_over_to_the_new_bsuid() {
    // Arrange: a username-only elder linked to the order.
    let (graph, app) = username_elder_linked_in(app_with_reply);
    let wamid = fresh_wamid();

    // Act
    app.deliver(&changed_user_id_payload(
        ELDER_BSUID,
        ELDER_NEW_BSUID,
        &fresh_wamid(),
    ));
    app.deliver(&username_text_payload(
        ELDER_NEW_BSUID,
        "Asha Devi",
        &wamid,
        "Still me",
    ));

    // Assert
    assert_eq!(order_of(&app, &wamid).as_deref(), Some(ORDER));
    assert_eq!(
        linked_senders(&app, ORDER),
        vec![ELDER_NEW_BSUID.to_string()]
    );
    app.assert_sends_settled(&graph, 3);
}

#[test]
fn a_number_change_reported_after_the_elder_wrote_from_the_new_number_joins_the_two() {
    // Arrange: linked by the old number; the first message from the new
    // number arrives before Meta's notice and is unattributed.
    const NEW_NUMBER: &str = "919833333333";
    let (graph, app, _processed) = elder_a_linked_in(app_with_reply, "Asha Devi");
    let early = fresh_wamid();
    app.deliver(&text_payload(
        NEW_NUMBER,
        "Asha Devi",
        &early,
        "It's me, new phone",
    ));
    assert_eq!(order_of(&app, &early), None);
    let later = fresh_wamid();

    // Act
    app.deliver(&changed_number_payload(ELDER_A, NEW_NUMBER, &fresh_wamid()));
    app.deliver(&text_payload(NEW_NUMBER, "Asha Devi", &later, "Any news?"));

    // Assert: one contact on the new number, linked to the order.
    assert_eq!(order_of(&app, &later).as_deref(), Some(ORDER));
    assert_eq!(linked_senders(&app, ORDER), vec![NEW_NUMBER.to_string()]);
    assert_eq!(contacts(&app), vec![(Some(NEW_NUMBER.to_string()), None)]);
    app.assert_sends_settled(&graph, 3);
}

// ------------------------------------------------------- the state lattice

#[test]
fn a_late_sent_after_failed_leaves_the_message_failed_with_its_error() {
    // Arrange
    let (_graph, app, _processed) = order_paid();
    let link = graph_id(&app, "link");

    // Act: Meta's `sent` arrives after its `failed`.
    app.deliver(&statuses_payload(vec![failed_status(
        &link,
        CUSTOMER,
        131026,
        "Message undeliverable",
    )]));
    app.deliver(&statuses_payload(vec![status(&link, "sent", CUSTOMER)]));

    // Assert
    let (state, error) = delivery_of(&app, &link);
    assert_eq!(state.as_deref(), Some("failed"));
    assert!(error.unwrap_or_default().contains("131026"));
}

#[test]
fn delivered_after_failed_wins_and_keeps_the_error_as_history() {
    // Arrange
    let (_graph, app, _processed) = order_paid();
    let link = graph_id(&app, "link");

    // Act
    app.deliver(&statuses_payload(vec![
        failed_status(&link, CUSTOMER, 131026, "Message undeliverable"),
        status(&link, "delivered", CUSTOMER),
        failed_status(&link, CUSTOMER, 131049, "Spam rate limit"),
    ]));

    // Assert: delivered, the first failure still shown, the late one ignored.
    let (state, error) = delivery_of(&app, &link);
    assert_eq!(state.as_deref(), Some("delivered"));
    let error = error.expect("the failure stays visible");
    assert!(error.contains("131026: Message undeliverable"), "{error}");
}

#[test]
fn each_status_records_what_the_message_cost() {
    // Arrange
    let (_graph, app, _processed) = order_paid();
    let confirmation = graph_id(&app, "confirmation");

    // Act: Meta's status carries `pricing` (billable, category).
    app.deliver(&statuses_payload(vec![status(
        &confirmation,
        "sent",
        CUSTOMER,
    )]));

    // Assert
    assert_eq!(
        pricing_of(&app, &confirmation),
        (Some(true), Some("utility".to_string()))
    );
}
