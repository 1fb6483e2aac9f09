//! The templates' health on the merchant's page (SPEC §9, §12): a banner
//! while Meta's template webhooks hold the confirmation or invite template,
//! its category changes, and Meta's latest account-level errors. Kept apart
//! from the page layout so either can change without the other.

use crate::template_health::Health;
use maud::{html, Markup};

pub fn banner(h: &Health) -> Markup {
    html! {
        @for (role, why) in &h.held {
            div.notice.warn.template-held data-template=(role) {
                img.icon src="/admin/static/alert.svg" alt="";
                " " b { "The " (role) " template is paused: " } (why) "."
            }
        }
        @if !h.categories.is_empty() || !h.errors.is_empty() {
            div.card.template-health {
                h2 { "Templates and account" }
                @for (role, what) in &h.categories {
                    p.template-category data-template=(role) { span.pill.warn { "category" } " " (what) }
                }
                @for (code, what) in &h.errors {
                    p.account-error {
                        span.pill.warn { "WhatsApp error " (code.map_or("(no code)".to_owned(), |c| c.to_string())) }
                        " " (what)
                    }
                }
            }
        }
    }
}
