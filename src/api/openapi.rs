//! Finishing touches on the generated OpenAPI document, applied to its JSON once: what every
//! route shares is said here once instead of on every handler.
//!
//! - Problem documents are `application/problem+json` (RFC 9457), not `application/json`.
//! - Every `/v1` operation can answer 400 (unreadable body or path), 401 (no or unknown key),
//!   403 (read-only key, admin-only operation), 404, 429 (too many failed authentications, with
//!   `Retry-After`) and 503 (store or SIP endpoint unavailable).
//! - Audio bodies (prompt uploads, audio downloads) are raw bytes (`type: string, format:
//!   binary`), not the JSON array of integers utoipa makes of `Vec<u8>`.
//! - Tagged enum variants refuse unknown fields like the server does (`additionalProperties:
//!   false`), which utoipa carries over for structs but not for enum variants.

use serde_json::{json, Map, Value};

const PROBLEM_REF: &str = "#/components/schemas/Problem";

fn problem_content() -> Value {
    json!({ "application/problem+json": { "schema": { "$ref": PROBLEM_REF } } })
}

/// Applies the shared conventions to the generated document.
pub fn finish(mut doc: Value) -> Value {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for (_method, op) in ops.iter_mut() {
                if let Some(content) = op.pointer_mut("/requestBody/content") {
                    binary_audio(content);
                }
                let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                    continue;
                };
                for (_code, resp) in responses.iter_mut() {
                    retype_problem(resp);
                    if let Some(content) = resp.get_mut("content") {
                        binary_audio(content);
                    }
                }
                if path.starts_with("/v1/") {
                    add_common(responses);
                }
            }
        }
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for schema in schemas.values_mut() {
            if let Some(variants) = schema.get_mut("oneOf").and_then(Value::as_array_mut) {
                for v in variants {
                    if v.get("type") == Some(&json!("object")) {
                        v["additionalProperties"] = json!(false);
                    }
                }
            }
        }
    }
    doc
}

fn binary_audio(content: &mut Value) {
    let Some(types) = content.as_object_mut() else {
        return;
    };
    for (media_type, body) in types.iter_mut() {
        if media_type.starts_with("audio/") {
            body["schema"] = json!({ "type": "string", "format": "binary" });
        }
    }
}

fn retype_problem(resp: &mut Value) {
    let Some(content) = resp.get_mut("content").and_then(Value::as_object_mut) else {
        return;
    };
    let is_problem = content
        .get("application/json")
        .and_then(|c| c.pointer("/schema/$ref"))
        .is_some_and(|r| r == PROBLEM_REF);
    if is_problem {
        if let Some(v) = content.remove("application/json") {
            content.insert("application/problem+json".into(), v);
        }
    }
}

fn add_common(responses: &mut Map<String, Value>) {
    let common = [
        (
            "400",
            "The request body or a path parameter cannot be read.",
        ),
        ("401", "No API key, or an unknown one."),
        (
            "403",
            "The key may not do this (read-only key, an admin-only operation, or a tenant key \
             changing what only the operator sets: domains, realm, owned numbers, limits).",
        ),
        ("404", "No such resource, or one of another tenant."),
        (
            "503",
            "The local store or the SIP endpoint is unavailable, or a change could not be made \
             durable in the spool (disk full); try again.",
        ),
    ];
    for (code, description) in common {
        responses
            .entry(code)
            .or_insert_with(|| json!({ "description": description, "content": problem_content() }));
    }
    responses.entry("429").or_insert_with(|| {
        json!({
            "description": "Too many failed authentications from this address.",
            "headers": { "Retry-After": { "description": "Seconds to wait.", "schema": { "type": "integer" } } },
            "content": problem_content()
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_retyped_and_common_errors_added() {
        let doc = json!({
            "paths": {
                "/v1/x": { "get": { "responses": {
                    "200": { "description": "ok", "content": { "application/json": { "schema": { "type": "string" } } } },
                    "404": { "description": "gone", "content": { "application/json": { "schema": { "$ref": PROBLEM_REF } } } }
                } } },
                "/health/live": { "get": { "responses": { "200": { "description": "ok" } } } },
                "/v1/a": { "put": {
                    "requestBody": { "content": { "audio/wav": { "schema": { "type": "array", "items": { "type": "integer" } } } } },
                    "responses": { "200": { "description": "ok", "content": { "audio/wav": { "schema": { "type": "array" } } } } }
                } }
            },
            "components": { "schemas": { "Target": { "oneOf": [ { "type": "object", "properties": {} } ] } } }
        });
        let d = finish(doc);
        assert!(d
            .pointer("/paths/~1v1~1x/get/responses/404/content/application~1problem+json")
            .is_some());
        assert!(d
            .pointer("/paths/~1v1~1x/get/responses/200/content/application~1json")
            .is_some());
        assert!(d
            .pointer("/paths/~1v1~1x/get/responses/429/headers/Retry-After")
            .is_some());
        assert_eq!(
            d.pointer("/paths/~1v1~1x/get/responses/404/description"),
            Some(&json!("gone"))
        );
        assert!(d
            .pointer("/paths/~1health~1live/get/responses/401")
            .is_none());
        let binary = json!({ "type": "string", "format": "binary" });
        assert_eq!(
            d.pointer("/paths/~1v1~1a/put/requestBody/content/audio~1wav/schema"),
            Some(&binary)
        );
        assert_eq!(
            d.pointer("/paths/~1v1~1a/put/responses/200/content/audio~1wav/schema"),
            Some(&binary)
        );
        assert_eq!(
            d.pointer("/components/schemas/Target/oneOf/0/additionalProperties"),
            Some(&json!(false))
        );
    }
}
