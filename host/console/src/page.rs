//! The page frame and the messages every page may show. maud escapes
//! every value it interpolates; only charts (host/console/src/charts.rs,
//! labels sanitized there) are inserted as markup.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::auth::User;

/// The navigation entries, in order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Agents,
    Events,
    Posture,
    Ctem,
    None,
}

const ENTRIES: [(Nav, &str, &str); 4] = [
    (Nav::Agents, "/agents", "Agents"),
    (Nav::Events, "/events", "Events"),
    (Nav::Posture, "/posture", "Inventory & alerts"),
    (Nav::Ctem, "/ctem", "CTEM"),
];

pub(crate) fn layout(title: &str, active: Nav, user: Option<&User>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · secop console" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                header {
                    span.brand { "secop console" }
                    nav {
                        @for (nav, href, label) in ENTRIES {
                            a href=(href) class=[(nav == active).then_some("active")] { (label) }
                        }
                    }
                    @if let Some(user) = user {
                        form.logout method="post" action="/logout" {
                            span.user { (user.name) }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A message in place of what could not be shown, and why.
pub(crate) fn problem(title: &str, detail: &str) -> Markup {
    html! {
        div.problem role="alert" {
            strong { (title) }
            p { (detail) }
        }
    }
}

pub(crate) fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

pub(crate) fn not_found(user: Option<&User>, detail: &str) -> Response {
    respond(StatusCode::NOT_FOUND, layout("Not found", Nav::None, user, problem("Not found", detail)))
}

/// A count with a label, for the figures above tables.
pub(crate) fn figure(label: &str, value: u64, key: &str) -> Markup {
    html! {
        div.figure data-figure=(key) {
            span.value { (value) }
            span.label { (label) }
        }
    }
}
