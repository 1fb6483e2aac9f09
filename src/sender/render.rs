//! From a due row to the `Message` it stands for, built from the order as
//! stored now, and whether Meta's template webhooks hold that message back.

use crate::config::{Config, LinkIn};
use crate::db::Db;
use crate::domain::{InviteToken, Money, OrderId};
use crate::links;
use crate::outbox::{Due, Kind, Variant};
use crate::whatsapp::Message;

/// The code a held template is paused under: Meta's own for a template it
/// will not send (SPEC §5), so the pause reads the same as one Meta answered.
pub(super) const HELD_TEMPLATE: i64 = 132001;

/// Why `message` must not go now, when it is a template Meta's template
/// webhooks hold. A database that cannot say does not hold it: Meta's own
/// answer (132001) still pauses sending if the template is refused.
pub(super) fn held_template(db: &Db, message: &Message) -> Option<String> {
    let (name, language) = message.template_name()?;
    let (name, language) = (name.to_owned(), language.to_owned());
    db.reads
        .with(move |c| crate::template_health::held(c, &name, &language))
        .unwrap_or_else(|e| {
            log::warn!("sender: cannot read template health: {e}");
            None
        })
}

/// Builds the message a row stands for, from the order as stored now (so a
/// corrected template name applies to messages still queued).
pub(super) fn render(config: &Config, job: &Due) -> Result<Message, String> {
    let order = OrderId::parse(&job.order_id).map_err(|e| format!("stored order id: {e}"))?;
    let message = match job.kind {
        Kind::Confirmation => {
            let amount = Money::new(job.total_amount, &job.currency)?;
            let note = job
                .note
                .clone()
                .unwrap_or_else(|| config.confirmation_note.clone());
            let mut params = vec![order.as_str().to_owned(), amount.display(), note];
            let token = || {
                job.token
                    .as_deref()
                    .and_then(InviteToken::parse)
                    .ok_or("the order has no invite token")
            };
            if config.link_in == LinkIn::Confirmation {
                params.push(links::invite_url(&config.app_base_url, &token()?));
            }
            let message = Message::template(
                &job.recipient,
                &config.template_name,
                &config.template_lang,
                &params,
            );
            if config.link_in == LinkIn::Button {
                message.with_url_button(&token()?.as_string())
            } else {
                message
            }
        }
        Kind::Link => {
            let token = job
                .token
                .as_deref()
                .and_then(InviteToken::parse)
                .ok_or("the order has no invite token")?;
            let link = links::wa_me_link(&config.business_number, &order, &token);
            match (job.variant, &config.invite_template) {
                (Variant::Template, Some(name)) => {
                    Message::template(&job.recipient, name, &config.template_lang, &[link])
                }
                _ => Message::text(&job.recipient, &links::link_message_body(&link)),
            }
        }
        Kind::ElderReply => {
            let text = config
                .elder_reply_text
                .as_deref()
                .ok_or("ELDER_REPLY_TEXT is no longer set")?
                .replace("{order_id}", order.as_str());
            Message::text(&job.recipient, &text)
        }
    };
    Ok(message.with_callback(order.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::testing::{config, due};

    #[test]
    fn the_confirmation_carries_the_link_as_link_in_says() {
        let token = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let mut job = due(Kind::Confirmation, Variant::Template, 0);
        job.token = Some(token.into());
        let body = |pairs: &[(&'static str, &'static str)]| -> serde_json::Value {
            let cfg = config(pairs);
            serde_json::from_str(&render(&cfg, &job).unwrap().to_json()).unwrap()
        };
        let plain = body(&[]);
        assert_eq!(plain["template"]["components"].as_array().unwrap().len(), 1);
        assert_eq!(
            plain["template"]["components"][0]["parameters"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let conf = body(&[
            ("WHATSAPP_LINK_IN", "confirmation"),
            ("APP_BASE_URL", "https://shop.example"),
        ]);
        assert_eq!(
            conf["template"]["components"][0]["parameters"][3],
            serde_json::json!({"type": "text", "text": format!("https://shop.example/w/invite/{token}")})
        );
        let button = body(&[("WHATSAPP_LINK_IN", "button")]);
        assert_eq!(
            button["template"]["components"][1],
            serde_json::json!({"type": "button", "sub_type": "url", "index": "0",
                               "parameters": [{"type": "text", "text": token}]})
        );
        assert_eq!(
            button["template"]["components"][0]["parameters"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn tokens_are_masked_in_texts() {
        let t = InviteToken::generate().as_string();
        let masked =
            crate::logging::mask_uuids(&format!("Token%3A%20{t} end {}", t.to_uppercase()));
        assert!(!masked.contains(&t));
        assert!(!masked.contains(&t.to_uppercase()));
        assert!(masked.contains(&t[..8]));
    }
}
