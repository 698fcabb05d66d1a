//! Which [`Role`] each Admin API call needs: one table, checked in the authentication
//! middleware before routing, so a route added later is covered by the rule of its resource
//! rather than open by default.
//!
//! - `admin`: who may use the API (`/admin-tokens`, `/users`, `/connected-apps`), the audit
//!   trail (`/audit`) and backups (`/backup`), reads included: token names, users and audit
//!   records tell an attacker whom to aim at.
//! - `operator`: every other change (licenses, registration tokens, data planes).
//! - `viewer`: every other read (`GET`, `HEAD`).
//!
//! The health probes and the API's description need no credential at all ([`needs_no_token`]).

use axum::http::Method;

use crate::model::Role;

/// Resources only admins may read or change.
const ADMIN_ONLY: [&str; 5] = ["admin-tokens", "users", "connected-apps", "audit", "backup"];

/// Whether `path` (exactly as the router matches it) is served without a credential: the
/// health probes, for orchestrators, and the OpenAPI description, for client generators.
/// Nothing else slips past the token check: no trailing slash, no other `/health/...`.
pub fn needs_no_token(path: &str) -> bool {
    super::status::is_health_probe(path) || path == super::openapi::OPENAPI_PATH
}

/// Whether `path` is the backup, which the audit trail records even though it is a read.
pub fn is_backup(path: &str) -> bool {
    resource(path) == "backup"
}

fn resource(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

/// The role a call of `method` on `path` (as the router sees it, not decoded) needs.
pub fn required_role(method: &Method, path: &str) -> Role {
    if ADMIN_ONLY.contains(&resource(path)) {
        Role::Admin
    } else if method == Method::GET || method == Method::HEAD {
        Role::Viewer
    } else {
        Role::Operator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resource_needs_its_role() {
        for (method, path, role) in [
            (Method::GET, "/licenses", Role::Viewer),
            (Method::HEAD, "/licenses/abc", Role::Viewer),
            (Method::GET, "/license/report", Role::Viewer),
            (Method::GET, "/clustering/data-planes", Role::Viewer),
            (Method::GET, "/status", Role::Viewer),
            (Method::POST, "/licenses", Role::Operator),
            (Method::PATCH, "/licenses/abc", Role::Operator),
            (
                Method::DELETE,
                "/clustering/data-planes/abc",
                Role::Operator,
            ),
            (Method::POST, "/registration-tokens", Role::Operator),
            (Method::OPTIONS, "/licenses", Role::Operator),
            (Method::POST, "/no-such-route", Role::Operator),
            (Method::GET, "/admin-tokens", Role::Admin),
            (Method::DELETE, "/admin-tokens/abc", Role::Admin),
            (Method::GET, "/users", Role::Admin),
            (Method::POST, "/users", Role::Admin),
            (Method::GET, "/connected-apps/x", Role::Admin),
            (Method::GET, "/audit", Role::Admin),
            (Method::GET, "/backup", Role::Admin),
            (Method::GET, "//users", Role::Admin),
        ] {
            assert_eq!(required_role(&method, path), role, "{method} {path}");
        }
    }

    #[test]
    fn only_the_probes_and_the_description_need_no_token() {
        for path in ["/health/live", "/health/ready", "/openapi.json"] {
            assert!(needs_no_token(path), "{path}");
        }
        for path in [
            "/health/live/",
            "/health",
            "/openapi.json/",
            "/openapi",
            "/status",
            "//openapi.json",
        ] {
            assert!(!needs_no_token(path), "{path}");
        }
    }

    #[test]
    fn roles_cover_the_ones_below_them() {
        assert!(Role::Admin.covers(Role::Admin));
        assert!(Role::Admin.covers(Role::Operator));
        assert!(Role::Admin.covers(Role::Viewer));
        assert!(Role::Operator.covers(Role::Viewer));
        assert!(!Role::Operator.covers(Role::Admin));
        assert!(!Role::Viewer.covers(Role::Operator));
        assert!(Role::Viewer.covers(Role::Viewer));
    }
}
