//! The merchant's page as HTML (SPEC §12), written with maud: the compiler
//! checks the markup, and every `( … )` interpolation is HTML-escaped, so
//! nothing a customer or an elder wrote can reach the page as markup. No
//! script at all; the funnel chart is SVG drawn here.

use crate::admin_view::{self, Chat, Event, Funnel, OrderRow, Overview, Stage};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Orders,
    Dead,
    Chats,
}

pub fn when(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[day] [month repr:short] [year], [hour]:[minute]:[second] UTC"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "—".into())
}

/// RFC 3339 text from the JSON views, shown the same way as `when`.
fn when_text(v: &Value) -> String {
    v.as_str()
        .and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| when((t.unix_timestamp_nanos() / 1_000_000) as i64))
        .unwrap_or_else(|| "—".into())
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

pub fn layout(title: &str, nav: Nav, csrf: &str, body: Markup) -> Markup {
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
                    input type="hidden" name="csrf" value=(csrf);
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

/// The funnel as horizontal bars, each scaled to the first step.
pub fn funnel_svg(f: &Funnel) -> Markup {
    let steps = f.steps();
    let max = steps[0]
        .1
        .max(steps.iter().map(|s| s.1).max().unwrap_or(0))
        .max(1);
    let width = 320.0_f64;
    let row = 30;
    html! {
        svg viewBox=(format!("0 0 {width} {}", row * steps.len())) role="img"
            aria-label=(steps.iter().map(|(l, v)| format!("{l}: {v}")).collect::<Vec<_>>().join(", ")) {
            @for (i, (label, value)) in steps.iter().enumerate() {
                @let y = i * row;
                text x="0" y=(y + 11) { (label) }
                text.v x=(width) y=(y + 11) text-anchor="end" { (value) }
                rect.track x="0" y=(y + 15) width=(width) height="9" rx="3" {}
                rect.bar x="0" y=(y + 15) width=(format!("{:.1}", width * (*value as f64) / (max as f64))) height="9" rx="3" {}
            }
        }
    }
}

pub fn overview(
    o: &Overview,
    counted_at: i64,
    paused: bool,
    templates: &crate::template_health::Health,
    csrf: &str,
) -> Markup {
    layout(
        "Overview",
        Nav::Overview,
        csrf,
        html! {
            h1 { "Overview" }
            (super::admin_page_templates::banner(templates))
            div.grid.three {
                @for (name, funnel) in &o.windows {
                    section.card.funnel data-window=(name) {
                        h2 { (name) }
                        (funnel_svg(funnel))
                    }
                }
            }
            div.card {
                h2 { "Funnel in numbers" }
                table.funnel-numbers {
                    thead { tr { th { "Step" } @for (name, _) in &o.windows { th.n { (name) } } } }
                    tbody {
                        @for (i, (label, _)) in Funnel::default().steps().iter().enumerate() {
                            tr { td { (label) } @for (name, f) in &o.windows { td.n data-cell=(format!("{name}:{i}")) { (f.steps()[i].1) } } }
                        }
                    }
                }
                p.muted.small { "Orders by the time they were paid; their messages with them; link opens and linked elders when they happened. Days are UTC. Counted " (when(counted_at)) "; recounted at most every 10 seconds." }
            }
            div.grid.two {
                div.card {
                    h2 { "Queue" }
                    div.queue {
                        div { b.num #queued { (o.queue.queued) } span.muted { "queued" } }
                        div { b.num #waiting { (o.queue.waiting) } span.muted { "waiting" } }
                        div { b.num #dead { (o.queue.dead) } span.muted { "dead" } }
                    }
                    p {
                        "Sending: "
                        @if paused { span.pill.warn #sending { "paused" } " — a configuration fault (token, template) holds all sending; see the log." }
                        @else { span.pill #sending { "running" } }
                    }
                    @if o.queue.dead > 0 { p { img.icon src="/admin/static/alert.svg" alt=""; " " a href="/admin/ui/dead" { "See the dead letters" } } }
                }
                div.card {
                    h2 { "What the messages cost" }
                    @if o.costs.is_empty() {
                        p.muted { "No billable message reported by WhatsApp yet." }
                    } @else {
                        table.costs {
                            thead { tr { th { "Billable, by category" } @for (name, _) in &o.windows { th.n { (name) } } } }
                            tbody {
                                @for (category, counts) in &o.costs {
                                    tr { td { (category) } @for (n, (name, _)) in counts.iter().zip(&o.windows) { td.n data-cell=(format!("cost:{category}:{name}")) { (n) } } }
                                }
                            }
                        }
                    }
                    p.muted.small { "From the pricing in WhatsApp's delivery statuses." }
                }
            }
        },
    )
}

fn steps_svg(stage: Stage) -> Markup {
    let reached = stage.step();
    html! {
        svg viewBox="0 0 84 10" aria-hidden="true" {
            @for i in 0..Stage::ALL.len() {
                rect class=(if i < reached { "done" } else { "todo" }) x=(i * 12) y="0" width="10" height="10" rx="2" {}
            }
        }
    }
}

pub fn orders(
    rows: &[OrderRow],
    q: Option<&str>,
    next_before: Option<&str>,
    paged: bool,
    csrf: &str,
) -> Markup {
    let q_param = q
        .map(|q| format!("&q={}", crate::links::encode_uri_component(q)))
        .unwrap_or_default();
    layout(
        "Orders",
        Nav::Orders,
        csrf,
        html! {
            h1 { "Orders" }
            form.search method="get" action="/admin/ui/orders" {
                input type="search" name="q" value=(q.unwrap_or("")) placeholder="Order id or last digits of a phone" aria-label="Search orders";
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
                                    (when(r.created_at))
                                }
                                span.right.steps.small {
                                    @if let Some(t) = &r.trouble { span.pill.warn { (t) } " " }
                                    span.stage data-stage=(r.stage.code()) { (r.stage.label()) } " " (steps_svg(r.stage))
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
fn delivery(view: &Value, kind: &str) -> String {
    let Some(m) = view["messages"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["kind"] == kind))
    else {
        return "not queued".into();
    };
    match (text(&m["status"]), m["delivery_status"].as_str()) {
        (_, Some("read")) => "delivered, read".into(),
        (_, Some("delivered")) => "delivered".into(),
        (_, Some("failed")) => format!(
            "failed at WhatsApp: {}",
            m["delivery_error"].as_str().unwrap_or("no reason given")
        ),
        ("sent", _) => "accepted by WhatsApp, not yet delivered".into(),
        ("dead", _) => "dead-lettered".into(),
        ("waiting", _) => "waiting for the confirmation".into(),
        (status, _) => status.to_owned(),
    }
}

fn funnel_stage(funnel: &Value) -> Stage {
    let mut stage = Stage::Paid;
    for s in Stage::ALL {
        if funnel[s.code()].as_bool() == Some(true) {
            stage = s;
        }
    }
    stage
}

pub fn order(view: &Value, timeline: &[Event], csrf: &str) -> Markup {
    let o = &view["order"];
    let stage = funnel_stage(&view["funnel"]);
    let clicks = &view["invite_clicks"];
    layout(
        "Order",
        Nav::Orders,
        csrf,
        html! {
            h1 { "Order " (text(&o["id"])) }
            div.grid.two {
                div.card {
                    dl.facts {
                        dt { "Stage" } dd { span.stage data-stage=(stage.code()) { (stage.label()) } " " span.steps { (steps_svg(stage)) } }
                        dt { "Confirmation" } dd #confirmation { (delivery(view, "confirmation")) }
                        dt { "Link message" } dd #link { (delivery(view, "link")) }
                        dt { "Amount" } dd { (text(&o["amount"])) }
                        dt { "Customer" } dd { (o["customer_phone"].as_str().unwrap_or("no valid phone")) }
                        dt { "Paid" } dd { (when_text(&o["created_at"])) }
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
                        p { img.icon src="/admin/static/chat.svg" alt=""; " " b { (c["profile_name"].as_str().unwrap_or("(no name)")) } " · " (admin_view::contact_label(c["wa_id"].as_str(), c["user_id"].as_str())) br; span.muted.small { "linked " (when_text(&c["linked_at"])) " · wrote " (said.len()) " message(s)" } }
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
                            div.muted.small { (when(e.at)) }
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

pub fn dead_letters(messages: &[Value], done: Option<&str>, csrf: &str) -> Markup {
    layout(
        "Dead letters",
        Nav::Dead,
        csrf,
        html! {
            h1 { "Dead letters" }
            @if let Some(d) = done { div.notice role="status" { "Message " (d) " is queued again." } }
            @if messages.is_empty() { div.card { p.muted { "No dead letter. Every message went out or is on its way." } } }
            @for m in messages {
                div.card.dead data-message=(text(&m["id"])) {
                    p {
                        b { (text(&m["kind"])) } " for order "
                        a href=(format!("/admin/ui/orders/{}", crate::links::encode_uri_component(text(&m["order_id"])))) { (text(&m["order_id"])) }
                        " · " (m["attempts"]) " attempt(s)"
                    }
                    p.small { img.icon src="/admin/static/alert.svg" alt=""; " " (m["last_error"].as_str().unwrap_or("no error recorded")) }
                    form method="post" action=(format!("/admin/ui/messages/{}/retry", text(&m["id"]))) {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Send again" }
                    }
                }
            }
        },
    )
}

fn chat_list(chats: &[Chat], id: &str) -> Markup {
    html! {
        ul.rows id=(id) {
            @if chats.is_empty() { li.muted { "None." } }
            @for c in chats {
                li {
                    p {
                        b { (c.profile_name.as_deref().unwrap_or("(no name)")) } " · " (c.sender)
                        " · " span.muted.small { (when(c.received_at)) }
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

pub fn chats(latest: &[Chat], unattributed: &[Chat], csrf: &str) -> Markup {
    layout(
        "Elder chats",
        Nav::Chats,
        csrf,
        html! {
            h1 { "Elder chats" }
            div.grid.two {
                div.card { h2 { "Latest messages" } (chat_list(latest, "latest")) }
                div.card { h2 { "Not attributed to an order" } (chat_list(unattributed, "unattributed")) }
            }
        },
    )
}
