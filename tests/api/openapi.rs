//! `GET /api/openapi.json`: the OpenAPI 3.1 document describes every REST route of the server.
use std::collections::BTreeSet;

use awc::http::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

/// Every REST route of the server and its methods (the chat WebSocket is not REST).
const ROUTES: &[(&str, &[&str])] = &[
    ("/api/auth/signup", &["post"]),
    ("/api/auth/login", &["post"]),
    ("/api/auth/logout", &["post"]),
    ("/api/me", &["get"]),
    ("/api/family/invite", &["post"]),
    ("/api/family/join", &["post"]),
    ("/api/wishes", &["get", "post"]),
    ("/api/wishes/{id}", &["patch", "delete"]),
    ("/api/board", &["get", "post", "delete"]),
    ("/api/board/grant", &["post"]),
    ("/api/board/attach", &["post"]),
    ("/api/board/history", &["get"]),
    ("/api/board/events", &["get"]),
    ("/api/missions", &["get", "post"]),
    ("/api/missions/{id}", &["patch", "delete"]),
    ("/api/missions/{id}/submit", &["post"]),
    ("/api/missions/{id}/approve", &["post"]),
    ("/api/missions/{id}/reject", &["post"]),
    ("/api/calendar", &["get"]),
    ("/api/chat/messages", &["get"]),
    ("/api/push/public-key", &["get"]),
    ("/api/push/subscriptions", &["post", "delete"]),
    ("/api/push/providers", &["get"]),
    ("/api/push/devices", &["get", "post"]),
    ("/api/push/devices/{id}", &["delete"]),
    ("/healthz", &["get"]),
    ("/metrics", &["get"]),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Fetches the document without a token, as any client would.
async fn document(app: &TestApp) -> Value {
    let mut res = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    res.json().limit(4 << 20).await.expect("a JSON document")
}

fn methods(item: &Value) -> BTreeSet<String> {
    item.as_object()
        .expect("a path item")
        .keys()
        .filter(|k| METHODS.contains(&k.as_str()))
        .cloned()
        .collect()
}

#[actix_web::test]
async fn the_document_is_openapi_3_1_and_lists_every_route() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.1"), "{version}");
    assert_eq!(doc["info"]["title"], "podo");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let paths = doc["paths"].as_object().expect("paths");
    for (path, expected) in ROUTES {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from the document"));
        let expected: BTreeSet<String> = expected.iter().map(|m| m.to_string()).collect();
        assert_eq!(methods(item), expected, "methods of {path}");
    }
    // Nothing else but the document itself.
    let listed: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let known: BTreeSet<&str> = ROUTES
        .iter()
        .map(|(path, _)| *path)
        .chain(["/api/openapi.json"])
        .collect();
    assert_eq!(listed, known);
    assert!(
        !paths.contains_key("/api/chat/ws"),
        "the WebSocket is not REST"
    );

    // Operation ids are unique, as OpenAPI requires.
    let mut ids = BTreeSet::new();
    for (path, item) in paths {
        for method in methods(item) {
            let id = item[&method]["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_owned()),
                "{method} {path}: operationId {id:?}"
            );
        }
    }

    let sse = &paths["/api/board/events"]["get"]["responses"]["200"]["content"];
    assert!(sse.get("text/event-stream").is_some(), "{sse}");
}

#[actix_web::test]
async fn every_documented_operation_is_a_real_route() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in methods(item) {
            // Without a token or body: protected routes answer 401, public ones answer or refuse
            // the missing body. An unknown route answers 404, a wrong method 405.
            let url = app.url(&path.replace("{id}", "1"));
            let method =
                awc::http::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            let res = app
                .client
                .request(method.clone(), url)
                .send()
                .await
                .expect("request sent");
            assert!(
                ![StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&res.status()),
                "{method} {path} is not a route of the server: {}",
                res.status()
            );
        }
    }
}

#[actix_web::test]
async fn schemas_errors_and_security_are_described() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    for name in [
        "Board",
        "Wish",
        "User",
        "Mission",
        "Family",
        "ChatMessage",
        "Error",
    ] {
        assert!(schemas[name].is_object(), "schema {name} missing");
    }

    // The error shape: `{"error", "message", "fields"?}`.
    let error = &schemas["Error"];
    assert_eq!(error["required"], serde_json::json!(["error", "message"]));
    assert_eq!(error["properties"]["fields"]["type"], "object");

    // Timestamps are RFC 3339 strings; unset ones are present and null.
    let wish = &schemas["Wish"];
    assert_eq!(wish["properties"]["created_at"]["type"], "string");
    assert_eq!(wish["properties"]["created_at"]["format"], "date-time");
    assert_eq!(
        wish["properties"]["given_at"]["type"],
        serde_json::json!(["string", "null"])
    );
    let required = wish["required"].as_array().expect("required fields");
    assert!(required.contains(&"given_at".into()), "{required:?}");
    assert_eq!(
        schemas["Mission"]["properties"]["due_on"]["format"], "date",
        "due_on is YYYY-MM-DD"
    );

    // Bearer JWT.
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    assert_eq!(bearer["bearerFormat"], "JWT");
    let paths = &doc["paths"];
    let me = &paths["/api/me"]["get"];
    assert!(
        me["security"]
            .as_array()
            .is_some_and(|s| s.contains(&serde_json::json!({"bearer": []}))),
        "{me}"
    );
    assert!(paths["/api/auth/signup"]["post"].get("security").is_none());
    assert!(paths["/healthz"]["get"].get("security").is_none());

    // Every protected operation documents its 401, and every error answer has the error shape.
    for (path, item) in paths.as_object().expect("paths") {
        for method in methods(item) {
            let operation = &item[&method];
            let responses = operation["responses"].as_object().expect("responses");
            if operation.get("security").is_some() {
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let grant = &paths["/api/board/grant"]["post"]["responses"];
    for status in ["401", "403", "404", "409", "422"] {
        assert!(grant.get(status).is_some(), "grant: no {status}");
    }
}
