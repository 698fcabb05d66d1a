//! `GET /ui/login`: one form, an Admin API token *or* a username and password.

use maud::{Markup, html};

use super::layout;

/// The sign-in page, with `error` (why the last attempt failed) when there is one.
pub fn login(error: Option<&str>) -> Markup {
    layout::bare(
        "Sign in to licsync",
        html! {
            @if let Some(error) = error {
                p #login-error.alert.expired role="alert" data-testid="login-error" { (error) }
            }
            form #login-form.login method="post" action="/ui/login" data-testid="login-form" {
                fieldset {
                    legend { "With an Admin API token" }
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="off" spellcheck="false"
                        aria-describedby="token-help";
                    p #token-help.help {
                        "Any role may look; the first admin token is in <data_dir>/admin-token."
                    }
                }
                p.or { "or" }
                fieldset {
                    legend { "As a user" }
                    label for="username" { "Username" }
                    input #username type="text" name="username" autocomplete="username";
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password";
                }
                button #sign-in type="submit" data-testid="sign-in" { "Sign in" }
            }
            p.help { "The status page is read-only: nothing on it changes the control plane." }
        },
    )
}
