//! Path and query parameters shared by the entity routes: the `{id}` segment and Kong's
//! `size` / `offset` paging, and the `{"data", "next"}` page listings answer with.
//!
//! Both are extracted by hand rather than with axum's `Path<Uuid>` / `Query<T>`, whose
//! rejections are plain text; and because Kong answers a bad id differently per method (404 on
//! `GET`, 400 on writes), the id extractor never rejects: handlers decide.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use uuid::Uuid;

use super::error::ApiError;
use super::form;

/// The `{id}` path segment, a UUID or not.
#[derive(Debug, Clone, Copy)]
pub struct EntityId(Option<Uuid>);

impl EntityId {
    /// The id, or Kong's 404 (for reads).
    pub fn or_not_found(self) -> Result<Uuid, ApiError> {
        self.0.ok_or_else(ApiError::not_found)
    }

    /// The id, or Kong's 400 `schema violation (id: expected a valid UUID)` (for writes).
    pub fn or_invalid(self) -> Result<Uuid, ApiError> {
        self.0.ok_or_else(ApiError::invalid_id)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for EntityId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let raw = Path::<String>::from_request_parts(parts, state).await.ok();
        Ok(Self(raw.and_then(|Path(raw)| parse_uuid(&raw))))
    }
}

/// Kong accepts ids only in the hyphenated form it prints.
fn parse_uuid(raw: &str) -> Option<Uuid> {
    (raw.len() == 36)
        .then(|| Uuid::try_parse(raw).ok())
        .flatten()
}

/// A listing, as Kong shapes one: `next` is the link to the following page, or null.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// The path and query of the following page, or null on the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A listing that always fits one page.
    pub fn all(data: Vec<T>) -> Self {
        Self { data, next: None }
    }
}

/// Default page size.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size.
pub const MAX_PAGE_SIZE: usize = 1000;

/// `?size=N&offset=T`: how many entities, starting at which id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub size: usize,
    /// The first id of the page; `None` for the first page.
    pub start: Option<Uuid>,
}

impl Paging {
    /// The `next` link of a page when `start` begins the following one.
    pub fn next_link(&self, collection: &str, start: Uuid) -> String {
        let offset = URL_SAFE_NO_PAD.encode(start.as_bytes());
        format!("{collection}?offset={offset}&size={}", self.size)
    }

    fn from_query(query: &str) -> Result<Self, ApiError> {
        let pairs = form::decode(query);
        let size = match form::value(&pairs, "size") {
            None => DEFAULT_PAGE_SIZE,
            Some(text) => text
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "size must be an integer between 1 and {MAX_PAGE_SIZE}, got '{text}'"
                    ))
                })?,
        };
        let start = match form::value(&pairs, "offset") {
            None | Some("") => None,
            Some(token) => {
                Some(decode_offset(token).ok_or_else(|| ApiError::invalid_offset(token))?)
            }
        };
        Ok(Self { size, start })
    }
}

fn decode_offset(token: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    Uuid::from_slice(&bytes).ok()
}

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Self::from_query(parts.uri.query().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_defaults_bounds_and_round_trips() {
        assert_eq!(
            Paging::from_query("").unwrap(),
            Paging {
                size: DEFAULT_PAGE_SIZE,
                start: None
            }
        );
        for bad in ["size=0", "size=1001", "size=-1", "size=ten", "size="] {
            let err = Paging::from_query(bad).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
        let id = Uuid::new_v4();
        let link = Paging::from_query("size=2")
            .unwrap()
            .next_link("/licenses", id);
        let query = link.strip_prefix("/licenses?").unwrap();
        assert_eq!(
            Paging::from_query(query).unwrap(),
            Paging {
                size: 2,
                start: Some(id)
            }
        );
        assert!(Paging::from_query("offset=nonsense").is_err());
    }

    #[test]
    fn only_hyphenated_uuids_are_ids() {
        let id = Uuid::new_v4();
        assert_eq!(parse_uuid(&id.to_string()), Some(id));
        assert_eq!(parse_uuid(&id.simple().to_string()), None);
        assert_eq!(parse_uuid("not-a-uuid"), None);
    }
}
