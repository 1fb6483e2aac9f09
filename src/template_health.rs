//! SPEC §9, template health: Meta's template webhooks, on the inbound route
//! and signed like every other delivery. `message_template_status_update`
//! says a template was approved, rejected, paused, disabled…;
//! `template_category_update` that its category is about to change or
//! changed (which changes what each message costs). The last word on each
//! template and language is kept in `template_health`, so a paused
//! confirmation or invite template holds its sending, as a 132001 does,
//! across restarts and instances, until Meta approves it again. Meta's
//! value-level `errors` (a problem of the system or the account, outside
//! any status) are kept in `whatsapp_errors` for the page.
//!
//! Field names: Meta's webhook references,
//! developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/message_template_status_update
//! and …/template_category_update. Every field may be missing.

use crate::config::Config;
use crate::db::sql::{params, Conn, OptionalExtension};
use crate::db::DbError;
use serde_json::Value;

/// The change fields this module reads (the rest of the route ignores them).
pub const FIELDS: [&str; 2] = ["message_template_status_update", "template_category_update"];

/// Events after which Meta refuses the template (SPEC §9: paused, disabled
/// or rejected). Any other event (`APPROVED`, `FLAGGED`, `REINSTATED`, …)
/// leaves it usable.
const HOLDING: [&str; 3] = ["PAUSED", "DISABLED", "REJECTED"];

#[derive(Debug, Clone, PartialEq)]
pub struct StatusNews {
    pub name: String,
    pub language: String,
    pub event: String,
    pub reason: Option<String>,
    pub category: Option<String>,
}

impl StatusNews {
    pub fn holds(&self) -> bool {
        HOLDING.contains(&self.event.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CategoryNews {
    pub name: String,
    pub language: String,
    pub new_category: Option<String>,
    pub previous_category: Option<String>,
    /// Set for an announced change: the category Meta will move it to.
    pub correct_category: Option<String>,
}

impl CategoryNews {
    /// One line for the log and the page.
    pub fn describe(&self) -> String {
        let show = |c: &Option<String>| c.clone().unwrap_or_else(|| "?".into());
        match &self.correct_category {
            Some(to) => format!(
                "Meta will change its category from {} to {to}",
                show(&self.new_category)
            ),
            None => format!(
                "Meta changed its category from {} to {}",
                show(&self.previous_category),
                show(&self.new_category)
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountError {
    pub code: Option<i64>,
    pub title: Option<String>,
    pub details: Option<String>,
}

#[derive(Debug, Default)]
pub struct News {
    pub statuses: Vec<StatusNews>,
    pub categories: Vec<CategoryNews>,
    pub errors: Vec<AccountError>,
}

impl News {
    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty() && self.categories.is_empty() && self.errors.is_empty()
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.chars().take(1024).collect()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads the template changes and value-level errors of a delivery.
pub fn parse(payload: &Value) -> News {
    let mut news = News::default();
    let changes = payload
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("changes").and_then(Value::as_array))
        .flatten();
    for change in changes {
        let field = change.get("field").and_then(Value::as_str).unwrap_or("");
        let Some(value) = change.get("value") else {
            continue;
        };
        let name = text(value, "message_template_name");
        let language = text(value, "message_template_language");
        match (field, name, language) {
            ("message_template_status_update", Some(name), Some(language)) => {
                if let Some(event) = text(value, "event") {
                    news.statuses.push(StatusNews {
                        name,
                        language,
                        event: event.to_ascii_uppercase(),
                        reason: text(value, "reason").filter(|r| r != "NONE"),
                        category: text(value, "message_template_category"),
                    });
                }
            }
            ("template_category_update", Some(name), Some(language)) => {
                news.categories.push(CategoryNews {
                    name,
                    language,
                    new_category: text(value, "new_category"),
                    previous_category: text(value, "previous_category"),
                    correct_category: text(value, "correct_category"),
                })
            }
            _ => {}
        }
        for e in value
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            news.errors.push(AccountError {
                code: e.get("code").and_then(Value::as_i64),
                title: text(e, "title").or_else(|| text(e, "message")),
                details: e.get("error_data").and_then(|d| text(d, "details")),
            });
        }
    }
    news
}

/// Stores what `news` says; call in the webhook's transaction.
pub fn apply(conn: &Conn, news: &News, now: i64) -> Result<(), DbError> {
    for s in &news.statuses {
        conn.prepare_cached(
            "INSERT INTO template_health (name, language, status, reason, status_at, category)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name, language) DO UPDATE SET
                 status = excluded.status, reason = excluded.reason,
                 status_at = excluded.status_at,
                 category = COALESCE(excluded.category, template_health.category)",
        )?
        .execute(params![
            s.name, s.language, s.event, s.reason, now, s.category
        ])?;
        if !s.holds() {
            // The messages it held wait out the sender's pause (up to five
            // minutes): due now instead.
            let like = format!("{} %", held_prefix(&s.name, &s.language));
            crate::outbox::due_now_where_error(conn, &like, now)?;
        }
    }
    for c in &news.categories {
        conn.prepare_cached(
            "INSERT INTO template_health (name, language, category, previous_category, category_note, category_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name, language) DO UPDATE SET
                 category = COALESCE(excluded.category, template_health.category),
                 previous_category = excluded.previous_category,
                 category_note = excluded.category_note,
                 category_at = excluded.category_at",
        )?
        .execute(params![
            c.name,
            c.language,
            c.new_category,
            c.previous_category,
            c.describe(),
            now
        ])?;
    }
    for e in &news.errors {
        conn.prepare_cached(
            "INSERT INTO whatsapp_errors (id, code, title, details, received_at)
             VALUES ($1, $2, $3, $4, $5)",
        )?
        .execute(params![
            crate::ids::new_id(),
            e.code,
            e.title,
            e.details
                .as_ref()
                .map(|d| d.chars().take(2048).collect::<String>()),
            now
        ])?;
    }
    Ok(())
}

/// The role a template plays for this configuration, if any.
pub fn role(config: &Config, name: &str, language: &str) -> Option<&'static str> {
    if language != config.template_lang {
        return None;
    }
    if name == config.template_name {
        Some("confirmation")
    } else if config.invite_template.as_deref() == Some(name) {
        Some("invite")
    } else {
        None
    }
}

/// Why Meta's template webhooks hold sending `name` in `language`, if they do.
pub fn held(conn: &Conn, name: &str, language: &str) -> Result<Option<String>, DbError> {
    let row: Option<(Option<String>, Option<String>)> = conn
        .prepare_cached(
            "SELECT status, reason FROM template_health WHERE name = $1 AND language = $2",
        )?
        .query_row(params![name, language], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        Some((Some(status), reason)) if HOLDING.contains(&status.as_str()) => Some(format!(
            "{} {status} at Meta{}; sending it waits until Meta approves it again",
            held_prefix(name, language),
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        )),
        _ => None,
    })
}

/// How a held template's reason starts (the messages it held are found by it).
fn held_prefix(name: &str, language: &str) -> String {
    format!("template {name} ({language}) is")
}

/// What the merchant's page shows about the configured templates.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// (role, why it is held) for each held template.
    pub held: Vec<(&'static str, String)>,
    /// (role, what changed) for each category change.
    pub categories: Vec<(&'static str, String)>,
    /// The latest value-level errors: (code, title and details).
    pub errors: Vec<(Option<i64>, String)>,
}

pub fn health(conn: &Conn, config: &Config) -> Result<Health, DbError> {
    let mut out = Health::default();
    let mut names = vec![("confirmation", config.template_name.clone())];
    if let Some(invite) = &config.invite_template {
        names.push(("invite", invite.clone()));
    }
    for (role, name) in names {
        if let Some(why) = held(conn, &name, &config.template_lang)? {
            out.held.push((role, why));
        }
        let note: Option<Option<String>> = conn
            .prepare_cached(
                "SELECT category_note FROM template_health WHERE name = $1 AND language = $2",
            )?
            .query_row(params![name, config.template_lang], |r| r.get(0))
            .optional()?;
        if let Some(Some(note)) = note {
            out.categories.push((
                role,
                format!("template {name} ({}): {note}", config.template_lang),
            ));
        }
    }
    let rows = conn
        .prepare_cached(
            "SELECT code, title, details FROM whatsapp_errors ORDER BY received_at DESC LIMIT 5",
        )?
        .query_map([], |r| {
            let title: Option<String> = r.get(1)?;
            let details: Option<String> = r.get(2)?;
            Ok((
                r.get::<_, Option<i64>>(0)?,
                [title, details]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": "),
            ))
        })?;
    for row in rows {
        out.errors.push(row?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metas_template_payloads_are_read() {
        // Shapes of Meta's webhook references (URLs in the module docs).
        let status = json!({"object":"whatsapp_business_account","entry":[{"id":"102290129340398","time":1674864290,"changes":[{"field":"message_template_status_update","value":{
            "event":"PAUSED","message_template_id":594425479261596_i64,"message_template_name":"order_confirmed",
            "message_template_language":"en","reason":"NONE","message_template_category":"UTILITY"}}]}]});
        let news = parse(&status);
        assert_eq!(news.statuses.len(), 1);
        let s = &news.statuses[0];
        assert_eq!(
            (s.name.as_str(), s.language.as_str(), s.event.as_str()),
            ("order_confirmed", "en", "PAUSED")
        );
        assert!(s.holds());
        assert_eq!(s.reason, None);
        let category = json!({"entry":[{"changes":[{"field":"template_category_update","value":{
            "message_template_id":594425479261596_i64,"message_template_name":"order_confirmed",
            "message_template_language":"en","previous_category":"UTILITY","new_category":"MARKETING"}}]}]});
        let news = parse(&category);
        assert_eq!(
            news.categories[0].describe(),
            "Meta changed its category from UTILITY to MARKETING"
        );
        let errors = json!({"entry":[{"changes":[{"field":"messages","value":{"messaging_product":"whatsapp",
            "errors":[{"code":131000,"title":"Something went wrong","message":"Something went wrong",
            "error_data":{"details":"Internal error"}}]}}]}]});
        let news = parse(&errors);
        assert_eq!(news.errors[0].code, Some(131000));
        assert_eq!(news.errors[0].details.as_deref(), Some("Internal error"));
        assert!(
            parse(&json!({"entry":[{"changes":[{"field":"messages","value":{}}]}]})).is_empty()
        );
    }
}
