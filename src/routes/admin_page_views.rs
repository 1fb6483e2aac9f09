//! The merchant's page as HTML (SPEC §12), written with maud: the compiler
//! checks the markup, and every `( … )` interpolation is HTML-escaped, so
//! nothing a customer or an elder wrote can reach the page as markup. No
//! script at all; the funnel's bars are SVG drawn here.

use crate::admin_view::chats::{contact_label, Chat};
use crate::admin_view::messages::{is_sandbox_id, price_words, Message, SANDBOX_RECORDED};
use crate::admin_view::order::{Event, OrderView};
use crate::admin_view::orders::{progress_of, OrderRow, Progress, Stage, StepState};
use crate::admin_view::overview::{Funnel, Overview};
use crate::domain::AdminZone;
use crate::outbox::{DeliveryState, Kind, Status};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Orders,
    Dead,
    Chats,
}

/// What every signed-in page needs besides its data: the session's CSRF
/// token, the merchant's time zone, and whether this server is in sandbox
/// mode (nothing it records was sent).
pub struct Ctx<'a> {
    pub csrf: &'a str,
    pub zone: &'a AdminZone,
    pub sandbox: bool,
}

impl Ctx<'_> {
    /// A moment in the merchant's zone (`ADMIN_TIME_ZONE`).
    pub fn when(&self, ms: i64) -> String {
        self.zone.format(ms).unwrap_or_else(|| "—".into())
    }

    /// RFC 3339 text from the JSON views, shown the same way as `when`.
    fn when_text(&self, v: &Value) -> String {
        v.as_str()
            .and_then(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| self.when((t.unix_timestamp_nanos() / 1_000_000) as i64))
            .unwrap_or_else(|| "—".into())
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · orderlink" }
                link rel="stylesheet" href="/admin/static/admin.css";
                link rel="icon" href="/admin/static/logo.svg" type="image/svg+xml";
            }
            body { (body) }
        }
    }
}

pub fn layout(title: &str, nav: Nav, cx: &Ctx, body: Markup) -> Markup {
    let item = |to: Nav, href: &str, label: &str| {
        html! { a.on[nav == to] href=(href) { (label) } }
    };
    page(
        title,
        html! {
            header.top {
                a.brand href="/admin" { img src="/admin/static/logo.svg" alt=""; "orderlink" }
                nav {
                    (item(Nav::Overview, "/admin", "Overview"))
                    (item(Nav::Orders, "/admin/ui/orders", "Orders"))
                    (item(Nav::Dead, "/admin/ui/dead", "Dead letters"))
                    (item(Nav::Chats, "/admin/ui/chats", "Elder chats"))
                }
                form method="post" action="/admin/sign-out" {
                    input type="hidden" name="csrf" value=(cx.csrf);
                    button.quiet type="submit" { "Sign out" }
                }
            }
            main { (body) }
        },
    )
}

pub fn sign_in(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        html! {
            main.signin {
                div.card {
                    img src="/admin/static/logo.svg" alt="";
                    h1 { "Sign in to orderlink" }
                    @if let Some(e) = error { div.notice.warn role="alert" { (e) } }
                    form method="post" action="/admin/sign-in" {
                        label for="token" { "Admin token" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        button type="submit" { "Sign in" }
                    }
                    p.muted.small { "The token is the ADMIN_TOKEN of this server's configuration." }
                }
            }
        },
    )
}

pub fn message(title: &str, body: &str) -> Markup {
    page(
        title,
        html! { main { div.card { h1 { (title) } p { (body) } p { a href="/admin" { "Back to the overview" } } } } },
    )
}

/// The periods the overview switches between (`?period=`), in the order of
/// the snapshot's windows.
pub const PERIODS: [(&str, &str); 3] = [("today", "Today"), ("7d", "7 days"), ("30d", "30 days")];

/// One bar, scaled to the first step (SVG: the page's CSP allows no inline style).
fn bar(value: i64, of: i64) -> Markup {
    let width = 100.0 * value as f64 / of.max(1) as f64;
    html! {
        svg.bar viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true" {
            rect.track x="0" y="0" width="100" height="6" rx="2" {}
            rect.fill x="0" y="0" width=(format!("{:.1}", width.min(100.0))) height="6" rx="2" {}
        }
    }
}

pub struct OverviewPage<'a> {
    pub overview: &'a Overview,
    /// Index into `PERIODS` and the overview's windows.
    pub period: usize,
    /// Paid messages per day of the longest period: (day start, count), oldest first.
    pub paid_by_day: &'a [(i64, i64)],
    pub counted_at: i64,
    pub paused: bool,
    /// What Meta's template webhooks said of our two templates (SPEC §9).
    pub templates: &'a crate::template_health::Health,
}

pub fn overview(p: &OverviewPage, cx: &Ctx) -> Markup {
    let o = p.overview;
    let (name, funnel) = o
        .windows
        .get(p.period)
        .copied()
        .unwrap_or(("Today", Funnel::default()));
    let steps = funnel.steps();
    let paid_messages: i64 = o
        .costs
        .iter()
        .map(|(_, n)| n.get(p.period).copied().unwrap_or(0))
        .sum();
    let days = match p.period {
        0 => 1,
        1 => 7,
        _ => 30,
    };
    let by_day: Vec<&(i64, i64)> = p.paid_by_day.iter().rev().take(days).collect();
    layout(
        "Overview",
        Nav::Overview,
        cx,
        html! {
            div.titlebar {
                h1 { "Overview" }
                nav.period aria-label="Period" {
                    @for (i, (code, label)) in PERIODS.iter().enumerate() {
                        a.on[i == p.period] href=(format!("/admin?period={code}")) aria-current=[(i == p.period).then_some("page")] { (label) }
                    }
                }
            }
            (super::admin_page_templates::banner(p.templates))
            section.card.funnel #funnel data-window=(name) {
                h2 { "Funnel · " (name) }
                ol.funnel-steps {
                    @for (i, (label, value)) in steps.iter().enumerate() {
                        li {
                            span.label { (label) }
                            b.num data-cell=(format!("{name}:{i}")) { (value) }
                            (bar(*value, steps[0].1))
                        }
                    }
                }
                @if cx.sandbox {
                    p.small.sandbox #sandbox-funnel { "Sandbox mode: messages are recorded, not sent, so WhatsApp delivers nothing and the steps after “Paid” stay at 0. Set WHATSAPP_TOKEN to go live." }
                }
            }
            div.grid.two {
                section.card #queue {
                    h2 { "Queue" }
                    div.queue {
                        div { b.num #queued { (o.queue.queued) } span.muted { "queued" } }
                        div { b.num #waiting { (o.queue.waiting) } span.muted { "waiting" } }
                        div { b.num #dead { (o.queue.dead) } span.muted { "dead" } }
                    }
                    p.small {
                        "Sending: "
                        @if p.paused { span.pill.warn #sending { "paused" } " — a configuration fault (token, template) holds all sending; see the log." }
                        @else if cx.sandbox { span.pill #sending { "running" } " " span.pill.off { "sandbox: recorded, not sent" } }
                        @else { span.pill #sending { "running" } }
                        @if o.queue.dead > 0 { " · " a href="/admin/ui/dead" { "see the dead letters" } }
                    }
                }
                section.card #cost {
                    h2 { "What messages cost · " (name) }
                    p #paid-summary {
                        b.num #paid-messages { (paid_messages) } " paid message(s)"
                        @if funnel.paid > 0 { " · " span #paid-per-order { (format!("{:.2}", paid_messages as f64 / funnel.paid as f64)) } " per order" }
                    }
                    @if !o.costs.is_empty() {
                        p.categories {
                            @for (category, counts) in &o.costs {
                                span.pill.cat { (category) " " b data-cell=(format!("cost:{category}:{name}")) { (counts.get(p.period).copied().unwrap_or(0)) } } " "
                            }
                        }
                    }
                    details #paid-by-day {
                        summary.small { "Per day" }
                        table.costs {
                            thead { tr { th { "Day" } th.n { "Paid" } } }
                            tbody {
                                @for (start, n) in &by_day {
                                    tr { td { (cx.zone.day(*start).unwrap_or_default()) } td.n data-day=(start) { (n) } }
                                }
                            }
                        }
                    }
                    p.muted.small { "Paid: what WhatsApp's statuses price as regular; messages inside the customer's 24-hour window are free." }
                }
            }
            p.muted.small { "Orders by the time they were paid, their messages with them; opens and linked elders when they happened. Days begin at midnight " (cx.zone.name()) ". Counted " (cx.when(p.counted_at)) "; recounted at most every 10 seconds." }
        },
    )
}

/// Where an order stands, in words, marked when it stopped.
fn stage_words(progress: &Progress) -> Markup {
    html! {
        span.stage.stopped[progress.stopped().is_some()] data-stage=(progress.stage().code())
            data-stopped=[progress.stopped().map(|s| s.code())] { (progress.words()) }
    }
}

/// Every step of the order, each done, failed or not yet, with its name.
fn stage_steps(progress: &Progress) -> Markup {
    html! {
        ol.stages #stages {
            @for (stage, state) in Stage::ALL.iter().zip(progress.steps) {
                @let (class, mark, said) = match state {
                    StepState::Done => ("done", "✓", "done"),
                    StepState::Failed => ("failed", "✗", "failed"),
                    StepState::Todo => ("todo", "·", "not yet"),
                };
                li class=(class) data-step=(stage.code()) { span.mark aria-hidden="true" { (mark) } " " (stage.label()) span.visually-hidden { ": " (said) } }
            }
        }
    }
}

pub fn orders(
    rows: &[OrderRow],
    q: Option<&str>,
    next_before: Option<&str>,
    paged: bool,
    cx: &Ctx,
) -> Markup {
    let q_param = q
        .map(|q| format!("&q={}", crate::links::encode_uri_component(q)))
        .unwrap_or_default();
    layout(
        "Orders",
        Nav::Orders,
        cx,
        html! {
            h1 { "Orders" }
            form.search method="get" action="/admin/ui/orders" {
                input type="search" name="q" value=(q.unwrap_or("")) placeholder="Order id or phone digits" aria-label="Search orders by order id or the last digits of a phone number";
                button type="submit" { "Search" }
            }
            div.card {
                @if rows.is_empty() { p.muted { "No order found." } }
                ul.rows #orders {
                    @for r in rows {
                        li {
                            a.row href=(format!("/admin/ui/orders/{}", crate::links::encode_uri_component(&r.id))) data-order=(r.id) {
                                span.id { (r.id) }
                                span.right.num { (r.amount) }
                                span.muted.small {
                                    @if let Some(p) = &r.phone_e164 { "+" (p) " · " }
                                    (cx.when(r.created_at))
                                }
                                span.where.small {
                                    @if let Some(t) = &r.trouble { span.pill.warn { (t) } " " }
                                    (stage_words(&r.progress))
                                }
                            }
                        }
                    }
                }
                div.pager {
                    @if paged { a href=(format!("/admin/ui/orders?{}", q_param.trim_start_matches('&'))) { "← Newest" } } @else { span {} }
                    @if let Some(before) = next_before {
                        a #older href=(format!("/admin/ui/orders?before={}{q_param}", crate::links::encode_uri_component(before))) { "Older →" }
                    }
                }
            }
        },
    )
}

/// Where the customer's message of this kind stands, in a few words.
fn delivery(view: &OrderView, kind: Kind) -> String {
    let Some(m) = view.message(kind) else {
        return "not queued".into();
    };
    let sandbox = is_sandbox_id(m.graph_message_id.as_deref());
    let price = match m.pricing_paid {
        Some(paid) => format!(" · {}", price_words(paid, m.pricing_type.as_deref())),
        None => String::new(),
    };
    let state = match (m.status, m.delivery) {
        (Status::Sent, None) if sandbox => SANDBOX_RECORDED.into(),
        (_, Some(DeliveryState::Read)) => "delivered, read".into(),
        (_, Some(DeliveryState::Delivered)) => "delivered".into(),
        (_, Some(DeliveryState::Failed)) => format!(
            "failed at WhatsApp: {}",
            m.delivery_error.as_deref().unwrap_or("no reason given")
        ),
        (Status::Sent, _) => "accepted by WhatsApp, not yet delivered".into(),
        (Status::Dead, _) => "dead-lettered".into(),
        (Status::Waiting, _) => "waiting for the confirmation".into(),
        (status, _) => status.as_str().to_owned(),
    };
    state + &price
}

/// The order's steps, from the same facts the orders list reads.
fn order_progress(view: &OrderView) -> Progress {
    let of = |kind| {
        let m = view.message(kind);
        (m.map(|m| m.status), m.and_then(|m| m.delivery))
    };
    progress_of(
        of(Kind::Confirmation),
        of(Kind::Link),
        view.json["funnel"]["link_opened"] == true,
        view.json["funnel"]["elder_linked"] == true,
    )
}

pub fn order(order: &OrderView, timeline: &[Event], cx: &Ctx) -> Markup {
    let view = &order.json;
    let o = &view["order"];
    let progress = order_progress(order);
    let clicks = &view["invite_clicks"];
    layout(
        "Order",
        Nav::Orders,
        cx,
        html! {
            h1 { "Order " (text(&o["id"])) }
            div.grid.two {
                div.card {
                    dl.facts {
                        dt { "Stage" } dd { (stage_words(&progress)) (stage_steps(&progress)) }
                        dt { "Confirmation" } dd #confirmation { (delivery(order, Kind::Confirmation)) }
                        dt { "Link message" } dd #link { (delivery(order, Kind::Link)) }
                        dt { "Cost" } dd #order-cost { (view["paid_messages"]) " paid message(s)" }
                        dt { "Amount" } dd { (text(&o["amount"])) }
                        dt { "Customer" } dd { (o["customer_phone"].as_str().unwrap_or("no valid phone")) }
                        dt { "Paid" } dd { (cx.when_text(&o["created_at"])) }
                        dt { "Payment" } dd { (o["payment_id"].as_str().unwrap_or("—")) }
                        dt { "Note" } dd { (o["note"].as_str().unwrap_or("—")) }
                        dt { "Link token" } dd { (view["token"]["token"].as_str().unwrap_or("none")) }
                        dt { "Link opened" } dd #clicks { (clicks["human"]) " by people, " (clicks["preview"]) " previews" }
                    }
                }
                div.card {
                    h2 { "Elders" }
                    @let contacts = view["contacts"].as_array().cloned().unwrap_or_default();
                    @if contacts.is_empty() { p.muted { "No elder has written about this order yet." } }
                    @for c in &contacts {
                        @let said = c["messages"].as_array().cloned().unwrap_or_default();
                        p { img.icon src="/admin/static/chat.svg" alt=""; " " b { (c["profile_name"].as_str().unwrap_or("(no name)")) } " · " (contact_label(c["wa_id"].as_str(), c["user_id"].as_str())) br; span.muted.small { "linked " (cx.when_text(&c["linked_at"])) " · wrote " (said.len()) " message(s)" } }
                        @if let Some(last) = said.last() {
                            div.quote.small { (last["text"].as_str().map(str::to_owned).unwrap_or_else(|| format!("({} message)", text(&last["type"])))) }
                        }
                    }
                }
            }
            div.card {
                h2 { "Timeline" }
                ol.timeline #timeline {
                    @for e in timeline {
                        li class=(e.kind) {
                            div.t { (e.title) }
                            div.muted.small { (cx.when(e.at)) }
                            @if let Some(d) = &e.detail {
                                @if e.kind == "elder" { div.quote { (d) } } @else { div.small { (d) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn dead_letters(messages: &[Message], done: Option<&str>, cx: &Ctx) -> Markup {
    layout(
        "Dead letters",
        Nav::Dead,
        cx,
        html! {
            h1 { "Dead letters" }
            @if let Some(d) = done { div.notice role="status" { "Message " (d) " is queued again." } }
            @if messages.is_empty() { div.card { p.muted { "No dead letter. Every message went out or is on its way." } } }
            @for m in messages {
                div.card.dead data-message=(m.id) {
                    p {
                        b { (m.kind.as_str()) } " for order "
                        a href=(format!("/admin/ui/orders/{}", crate::links::encode_uri_component(&m.order_id))) { (m.order_id) }
                        " · " (m.attempts) " attempt(s)"
                    }
                    p.small { img.icon src="/admin/static/alert.svg" alt=""; " " (m.last_error.as_deref().unwrap_or("no error recorded")) }
                    form method="post" action=(format!("/admin/ui/messages/{}/retry", m.id)) {
                        input type="hidden" name="csrf" value=(cx.csrf);
                        button type="submit" { "Send again" }
                    }
                }
            }
        },
    )
}

fn chat_list(chats: &[Chat], id: &str, cx: &Ctx) -> Markup {
    html! {
        ul.rows id=(id) {
            @if chats.is_empty() { li.muted { "None." } }
            @for c in chats {
                li {
                    p {
                        b { (c.profile_name.as_deref().unwrap_or("(no name)")) } " · " (c.sender)
                        " · " span.muted.small { (cx.when(c.received_at)) }
                        br;
                        @match &c.order_id {
                            Some(order) => { "order " a href=(format!("/admin/ui/orders/{}", crate::links::encode_uri_component(order))) { (order) } }
                            None => { span.pill.off { "unattributed" } }
                        }
                    }
                    div.quote { (c.text.as_deref().map(str::to_owned).unwrap_or_else(|| format!("({} message)", c.message_type))) }
                }
            }
        }
    }
}

pub fn chats(latest: &[Chat], unattributed: &[Chat], cx: &Ctx) -> Markup {
    layout(
        "Elder chats",
        Nav::Chats,
        cx,
        html! {
            h1 { "Elder chats" }
            div.grid.two {
                div.card { h2 { "Latest messages" } (chat_list(latest, "latest", cx)) }
                div.card { h2 { "Not attributed to an order" } (chat_list(unattributed, "unattributed", cx)) }
            }
        },
    )
}
