//! Cursor pagination, the same on every list of the admin API: `?limit=N&cursor=C` in, a
//! JSON object `{"items": [...], "next_cursor": "..."}` out, `next_cursor` absent on the last
//! page. `limit` is 1-500 (default 100; out of range: 422 naming `limit`); `cursor` is the
//! `next_cursor` of the previous page (empty: the first page; not one of ours: 422 naming
//! `cursor`). A query string that does not parse is a 400 naming the parameter.
//!
//! Lists kept in memory (tenants, keys, users, prompts, calls in progress, voicemail) page
//! with [`Paging`]: the whole list sorted by a key, then the items after the cursor's key.
//! Lists in the history store page in SQL with the same query and page shapes.

use super::error::{FieldError, Problem};
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::StatusCode;
use serde::Deserialize;
use std::marker::PhantomData;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::{RefOr, Schema};
use utoipa::IntoParams;

/// Paging of a list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1-500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; empty is the first page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The query, with `limit` checked: 400 when it does not parse, 422 for a `limit` out of
    /// 1-500.
    pub fn from_query(
        query: Result<Query<PageQuery>, QueryRejection>,
    ) -> Result<PageQuery, Problem> {
        let Query(q) = query.map_err(|e| query_problem(e, &["limit", "cursor"]))?;
        check_limit(q.limit)?;
        Ok(q)
    }
}

/// What a list's `cursor` is, for its OpenAPI parameter (implemented by [`page_type!`]).
pub trait CursorDoc {
    /// The parameter's description.
    const DOC: &'static str;
    /// A pattern every cursor of the list matches (anything else is a 422).
    const PATTERN: Option<&'static str>;
}

/// The `limit` and `cursor` parameters of the list that answers page type `P`, for
/// `#[utoipa::path(params(...))]`: [`PageQuery`] with the cursor described by `P`.
pub struct PageParams<P>(PhantomData<P>);

impl<P: CursorDoc> IntoParams for PageParams<P> {
    fn into_params(parameter_in: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut params = PageQuery::into_params(parameter_in);
        for p in params.iter_mut().filter(|p| p.name == "cursor") {
            p.description = Some(P::DOC.into());
            if let Some(RefOr::T(Schema::Object(o))) = &mut p.schema {
                o.pattern = P::PATTERN.map(String::from);
            }
        }
        params
    }
}

/// Declares one page of a list: `items` and `next_cursor`, with what the list's cursor is
/// (for [`PageParams`]).
///
/// ```text
/// page_type! {
///     /// One page of tenants.
///     TenantPage of TenantSummary,
///     items: "Tenants, by id.",
///     cursor: "`next_cursor` of the previous page (the last tenant id it holds); empty is the first page.",
///     pattern: None,
/// }
/// ```
macro_rules! page_type {
    ($(#[doc = $doc:tt])* $page:ident of $item:ident, items: $items:tt, cursor: $cursor:tt, pattern: $pattern:expr $(,)?) => {
        $(#[doc = $doc])*
        #[derive(serde::Serialize, utoipa::ToSchema)]
        pub struct $page {
            #[doc = $items]
            pub items: Vec<$item>,
            /// Pass as `cursor` for the next page; absent on the last page.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub next_cursor: Option<String>,
        }

        impl $crate::api::page::CursorDoc for $page {
            const DOC: &'static str = $cursor;
            const PATTERN: Option<&'static str> = $pattern;
        }
    };
}
pub(crate) use page_type;

/// A key a list is sorted by, and its text form as a cursor.
pub trait PageKey: Ord + Sized {
    /// The cursor after an item with this key.
    fn encode(&self) -> String;
    /// Parses a cursor; None when it is not one of ours.
    fn decode(s: &str) -> Option<Self>;
}

/// Ids, extensions, names: the cursor is the key itself.
impl PageKey for String {
    fn encode(&self) -> String {
        self.clone()
    }

    fn decode(s: &str) -> Option<String> {
        Some(s.to_string())
    }
}

/// Numeric ids (calls in progress): decimal, at most 19 digits (`^[0-9]{0,19}$`).
impl PageKey for u64 {
    fn encode(&self) -> String {
        self.to_string()
    }

    fn decode(s: &str) -> Option<u64> {
        digits(s, 19)?.parse().ok()
    }
}

/// A unix time and an id (voicemail, oldest first): `UNIX:ID`, at most 15 digits
/// (`^[0-9]{1,15}:.*$`).
impl PageKey for (u64, String) {
    fn encode(&self) -> String {
        format!("{}:{}", self.0, self.1)
    }

    fn decode(s: &str) -> Option<(u64, String)> {
        let (unix, id) = s.split_once(':')?;
        Some((digits(unix, 15)?.parse().ok()?, id.to_string()))
    }
}

/// `s` when it is 1 to `most` ASCII digits (no sign, no spaces: what the patterns say).
fn digits(s: &str, most: usize) -> Option<&str> {
    (!s.is_empty() && s.len() <= most && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

/// A checked page request: how many items, after which key.
#[derive(Debug)]
pub struct Paging<K> {
    limit: usize,
    after: Option<K>,
}

impl<K: PageKey> Paging<K> {
    /// Checks the query: 400 when it does not parse, 422 for a `limit` out of 1-500 or a
    /// `cursor` that is not one of ours.
    pub fn from_query(
        query: Result<Query<PageQuery>, QueryRejection>,
    ) -> Result<Paging<K>, Problem> {
        let q = PageQuery::from_query(query)?;
        let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(K::decode(c).ok_or_else(bad_cursor)?),
        };
        Ok(Paging {
            limit: q.limit.unwrap_or(100) as usize,
            after,
        })
    }

    /// The page of `items` (in any order) after the cursor, by `key`, and the next cursor
    /// when more follow.
    pub fn page<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> K) -> (Vec<T>, Option<String>) {
        items.sort_by_cached_key(&key);
        let mut page: Vec<T> = items
            .into_iter()
            .filter(|t| self.after.as_ref().is_none_or(|a| key(t) > *a))
            .take(self.limit + 1)
            .collect();
        let next_cursor = (page.len() > self.limit).then(|| {
            page.truncate(self.limit);
            page.last().map(|t| key(t).encode()).unwrap_or_default()
        });
        (page, next_cursor)
    }
}

/// A query string that does not parse: 400, naming the parameter at fault (one of `fields`)
/// when serde says which (": unknown variant `x` ... for `direction`").
pub fn query_problem(e: QueryRejection, fields: &[&str]) -> Problem {
    let text = e.body_text();
    let mut p = Problem::new(StatusCode::BAD_REQUEST, "invalid-query", text.clone());
    if let Some(field) = fields
        .iter()
        .find(|f| text.contains(&format!("`{f}`")) || text.contains(&format!("{f}:")))
    {
        p.errors.push(FieldError {
            path: (*field).to_string(),
            message: text.clone(),
        });
    }
    p
}

/// A query parameter that parses but is not allowed: 422 naming it.
pub fn invalid(field: &str, message: &str) -> Problem {
    let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-query", message);
    p.errors.push(FieldError {
        path: field.into(),
        message: message.into(),
    });
    p
}

/// 1 ≤ limit ≤ 500.
pub fn check_limit(limit: Option<u32>) -> Result<(), Problem> {
    if limit.is_some_and(|l| !(1..=500).contains(&l)) {
        return Err(invalid("limit", "must be 1-500"));
    }
    Ok(())
}

/// A cursor that is not a `next_cursor` of this list.
pub fn bad_cursor() -> Problem {
    invalid("cursor", "must be a next_cursor from a previous page")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paging<K: PageKey>(limit: usize, after: Option<&str>) -> Paging<K> {
        Paging {
            limit,
            after: after.map(|a| K::decode(a).expect("cursor")),
        }
    }

    #[test]
    fn pages_walk_the_sorted_list_once() {
        let items: Vec<u64> = vec![30, 4, 100, 7, 12];
        let (p1, c1) = paging::<u64>(2, None).page(items.clone(), |v| *v);
        assert_eq!((p1, c1.as_deref()), (vec![4, 7], Some("7")));
        let (p2, c2) = paging::<u64>(2, Some("7")).page(items.clone(), |v| *v);
        assert_eq!((p2, c2.as_deref()), (vec![12, 30], Some("30")));
        let (p3, c3) = paging::<u64>(2, Some("30")).page(items.clone(), |v| *v);
        assert_eq!((p3, c3), (vec![100], None));
        // Exactly a page's worth: no cursor to an empty page.
        let (p, c) = paging::<u64>(5, None).page(items, |v| *v);
        assert_eq!((p.len(), c), (5, None));
    }

    #[test]
    fn cursors_hold_to_their_patterns() {
        assert_eq!(u64::decode("0012"), Some(12));
        for bad in ["", "+1", "-1", " 1", "1a", "12345678901234567890"] {
            assert_eq!(u64::decode(bad), None, "{bad}");
        }
        let k = (1_700_000_000u64, "1700000000-3-00af".to_string());
        assert_eq!(<(u64, String)>::decode(&k.encode()), Some(k));
        for bad in ["", "x", ":id", "1234567890123456:id", "+1:id"] {
            assert_eq!(<(u64, String)>::decode(bad), None, "{bad}");
        }
        // Oldest first: the time before the id ("999-…" before "1000-…").
        assert!((999, "999-1-0000".to_string()) < (1000, "1000-1-0000".to_string()));
    }
}
