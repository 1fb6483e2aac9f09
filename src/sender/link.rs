//! Which way an order's link goes (SPEC §5, `WHATSAPP_LINK_IN`): inside
//! the confirmation, as its button, or as a message of its own, a text in
//! an open window or else the invite template; and how each way is
//! recorded on the row and told at start-up.

use crate::config::{Config, LinkIn};
use crate::outbox::{Due, Kind, LinkVia, Variant};

/// Why a link refused outside the window (131047) ends: no template to
/// carry it.
pub fn no_invite_template(reason: &str) -> String {
    format!(
        "{reason}; the customer has not written in 24 hours, so WhatsApp refuses the link as text: set WHATSAPP_INVITE_TEMPLATE to an approved template with one body variable to send it"
    )
}

/// Which way the link went, recorded on the row that carried it once Meta
/// accepted it: `claimed` is the row's variant when it was claimed (a
/// template only after a 131047), `sent` how it went out.
pub fn link_via(config: &Config, kind: Kind, claimed: Variant, sent: Variant) -> Option<LinkVia> {
    match kind {
        Kind::Confirmation => match config.link_in {
            LinkIn::Message => None,
            LinkIn::Confirmation => Some(LinkVia::InConfirmation),
            LinkIn::Button => Some(LinkVia::InButton),
        },
        Kind::Link => Some(match (claimed, sent) {
            (Variant::Template, _) => LinkVia::TemplateAfter131047,
            (Variant::Text, Variant::Template) => LinkVia::TemplateWindowClosed,
            // With the invite template set, a text goes only into an open window.
            (Variant::Text, Variant::Text) if config.invite_template.is_some() => {
                LinkVia::TextWindowOpen
            }
            (Variant::Text, Variant::Text) => LinkVia::TextNoTemplate,
        }),
        Kind::ElderReply => None,
    }
}

/// How a due link goes (SPEC §5): as the invite template when one is set
/// and the customer's window is not known to be open; as queued otherwise.
pub fn link_variant(config: &Config, job: &Due, window_open: impl FnOnce() -> bool) -> Variant {
    if job.kind == Kind::Link && job.variant == Variant::Text && config.invite_template.is_some() {
        if window_open() {
            Variant::Text
        } else {
            Variant::Template
        }
    } else {
        job.variant
    }
}

/// What each order sends under `WHATSAPP_LINK_IN`, for the start-up log
/// (sandbox mode then prints each message as it would go).
pub fn describe_link_in(config: &Config) -> String {
    let confirmation = format!("the confirmation template {}", config.template_name);
    match config.link_in {
        LinkIn::Message => format!(
            "WHATSAPP_LINK_IN=message: each order sends {confirmation}, then the link as a text when the customer wrote within 24 hours, {}",
            match &config.invite_template {
                Some(name) => format!("otherwise as the invite template {name} (a second paid message)"),
                None => "otherwise nothing that arrives (WHATSAPP_INVITE_TEMPLATE is not set)".into(),
            }
        ),
        LinkIn::Confirmation => format!(
            "WHATSAPP_LINK_IN=confirmation: each order sends one message, {confirmation} with the invite URL {}/w/invite/<token> as its fourth body parameter",
            config.app_base_url
        ),
        LinkIn::Button => format!(
            "WHATSAPP_LINK_IN=button: each order sends one message, {confirmation} whose URL button {}/w/invite/{{{{1}}}} gets the token",
            config.app_base_url
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::testing::{config, due};

    #[test]
    fn the_link_goes_by_the_window_and_records_which_way_as_a_table() {
        use LinkVia::*;
        let plain = config(&[]);
        let invite = config(&[("WHATSAPP_INVITE_TEMPLATE", "order_link")]);
        let in_conf = config(&[("WHATSAPP_LINK_IN", "confirmation")]);
        let in_button = config(&[("WHATSAPP_LINK_IN", "button")]);
        let (l, x, t) = (Kind::Link, Variant::Text, Variant::Template);
        // (config, row variant, window open) → sent as
        let ways = [
            (&plain, x, false, x),
            (&plain, x, true, x),
            (&invite, x, true, x),
            (&invite, x, false, t),
            // Requeued after a 131047: a template whatever the window.
            (&invite, t, true, t),
        ];
        for (i, (cfg, variant, open, want)) in ways.into_iter().enumerate() {
            assert_eq!(
                link_variant(cfg, &due(l, variant, 0), || open),
                want,
                "row {i}"
            );
        }
        // Without the template the window is never read.
        link_variant(&plain, &due(l, x, 0), || panic!("window read"));
        // (config, kind, claimed as, sent as) → link_via
        let vias = [
            (&plain, l, x, x, Some(TextNoTemplate)),
            (&invite, l, x, x, Some(TextWindowOpen)),
            (&invite, l, x, t, Some(TemplateWindowClosed)),
            (&invite, l, t, t, Some(TemplateAfter131047)),
            (&plain, Kind::Confirmation, t, t, None),
            (&in_conf, Kind::Confirmation, t, t, Some(InConfirmation)),
            (&in_button, Kind::Confirmation, t, t, Some(InButton)),
            (&in_button, Kind::ElderReply, x, x, None),
        ];
        for (i, (cfg, kind, claimed, sent, want)) in vias.into_iter().enumerate() {
            assert_eq!(link_via(cfg, kind, claimed, sent), want, "row {i}");
        }
    }
}
