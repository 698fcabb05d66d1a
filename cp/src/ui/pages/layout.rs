//! The frame every signed-in page shares: head (one stylesheet, one deferred script, both
//! from this binary), the navigation with the current page marked, who is signed in and the
//! sign-out button, the page's one `<h1>`, and the live region the refresh script replaces.

use maud::{DOCTYPE, Markup, html};

use crate::ui::assets;

/// The pages in the navigation, by path.
pub const NAV: [(&str, &str); 4] = [
    ("/ui", "Overview"),
    ("/ui/data-planes", "Data planes"),
    ("/ui/licenses", "Licenses"),
    ("/ui/usage", "Usage"),
];

/// Seconds between live refreshes of the live region.
pub const REFRESH_SECONDS: u32 = 5;

/// What the frame needs besides the page's content.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    /// The page's `<h1>` (and `<title>`).
    pub title: &'a str,
    /// The navigation entry to mark as current.
    pub nav: &'a str,
    /// Who is signed in, as the header names them (`token 'ops' (viewer)`).
    pub who: &'a str,
    /// The footer's facts (version, node).
    pub footer: &'a str,
}

/// A whole page: `controls` stay put across refreshes (filter forms keep what is typed),
/// `live` is what the refresh script replaces.
pub fn page(frame: &Frame<'_>, controls: Markup, live: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (frame.title) " · licsync" }
                link rel="stylesheet" href=(assets::CSS_PATH);
                script src=(assets::JS_PATH) defer {}
            }
            body data-refresh-seconds=(REFRESH_SECONDS) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui" { "licsync" }
                    nav aria-label="Main" {
                        ul {
                            @for (path, name) in NAV {
                                li {
                                    @if path == frame.nav {
                                        a href=(path) aria-current="page" { (name) }
                                    } @else {
                                        a href=(path) { (name) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span #signed-in-as data-testid="signed-in-as" { (frame.who) }
                        form method="post" action="/ui/logout" {
                            button #sign-out type="submit" data-testid="sign-out" { "Sign out" }
                        }
                    }
                }
                main #main {
                    h1 { (frame.title) }
                    (controls)
                    div #live data-testid="live-region" { (live) }
                }
                footer { (frame.footer) }
            }
        }
    }
}

/// The login page (no navigation: nobody is signed in).
pub fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · licsync" }
                link rel="stylesheet" href=(assets::CSS_PATH);
            }
            body.bare {
                main #main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}
