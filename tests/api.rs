//! The admin API of the running binary over HTTP: auth and tenant isolation, validation
//! problems naming the field, ETag conflicts, keys, health, metrics, OpenAPI, and a change
//! through the API reaching the next SIP call.

mod common;

use common::*;
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Api {
    base: String,
    http: Client,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api {
            base: format!("http://127.0.0.1:{}", server.api_port),
            http: Client::new(),
        }
    }

    fn get(&self, path: &str, key: Option<&str>) -> Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send().expect("GET")
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Response {
        let url = format!("{}{path}", self.base);
        let mut r = match method {
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        }
        .bearer_auth(key);
        if let Some(b) = body {
            r = r.json(b);
        }
        if let Some(m) = if_match {
            r = r.header("If-Match", m);
        }
        r.send().expect("request")
    }
}

fn problem(r: Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    r.json().expect("problem json")
}

/// Creates tenant `acme` (the demo document under another id and domain, without numbers)
/// and returns a read-write key for it.
fn acme_with_key(api: &Api) -> String {
    let mut acme = demo();
    acme["id"] = json!("acme");
    acme["name"] = json!("Acme");
    acme["domains"] = json!(["acme.example"]);
    acme["numbers"] = json!([]);
    assert_eq!(
        api.send("POST", "/v1/tenants", ADMIN_KEY, Some(&acme), None)
            .status(),
        StatusCode::CREATED
    );
    let k: Value = api
        .send(
            "POST",
            "/v1/tenants/acme/keys",
            ADMIN_KEY,
            Some(&json!({"name": "ops"})),
            None,
        )
        .json()
        .expect("key");
    k["key"].as_str().expect("key").to_string()
}

fn demo() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo().join("config/demo-tenant.json")).expect("demo"),
    )
    .expect("json")
}

#[test]
fn health_metrics_and_openapi() {
    let p = ports();
    let server = Server::start(&p, &[]);
    let api = Api::new(&server);
    assert_eq!(api.get("/health/live", None).status(), StatusCode::OK);
    let ready: Value = api.get("/health/ready", None).json().expect("json");
    assert_eq!(ready["status"], "ok");
    let m = api.get("/metrics", None).text().expect("text");
    for name in [
        "switchyard_calls_active",
        "switchyard_registrations",
        "switchyard_rtp_packets_sent_total",
        "switchyard_config_revision 1",
    ] {
        assert!(m.contains(name), "{name} missing:\n{m}");
    }
    let doc: Value = api.get("/openapi.json", None).json().expect("openapi");
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    for path in [
        "/v1/tenants",
        "/v1/tenants/{tenant}",
        "/v1/tenants/{tenant}/keys",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} not documented");
    }
    assert_eq!(api.get("/docs/", None).status(), StatusCode::OK);
    assert_eq!(
        problem(api.get("/nope", None), StatusCode::NOT_FOUND)["status"],
        404
    );
}

#[test]
fn keys_and_tenant_isolation() {
    let p = ports();
    let server = Server::start(&p, &[]);
    let api = Api::new(&server);
    assert_eq!(
        problem(api.get("/v1/tenants", None), StatusCode::UNAUTHORIZED)["status"],
        401
    );
    problem(
        api.get("/v1/tenants", Some("wrong")),
        StatusCode::UNAUTHORIZED,
    );
    let list: Value = api
        .get("/v1/tenants", Some(ADMIN_KEY))
        .json()
        .expect("json");
    assert_eq!(list["items"][0]["id"], "demo");

    // A second tenant with its own keys.
    let mut acme = demo();
    acme["id"] = json!("acme");
    acme["name"] = json!("Acme");
    acme["domains"] = json!(["acme.example"]);
    acme["numbers"] = json!([]);
    let r = api.send("POST", "/v1/tenants", ADMIN_KEY, Some(&acme), None);
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().contains_key("etag"));
    problem(
        api.send("POST", "/v1/tenants", ADMIN_KEY, Some(&acme), None),
        StatusCode::CONFLICT,
    );
    let rw: Value = api
        .send(
            "POST",
            "/v1/tenants/acme/keys",
            ADMIN_KEY,
            Some(&json!({"name": "ops"})),
            None,
        )
        .json()
        .expect("key");
    let ro: Value = api
        .send(
            "POST",
            "/v1/tenants/acme/keys",
            ADMIN_KEY,
            Some(&json!({"name": "viewer", "read_only": true})),
            None,
        )
        .json()
        .expect("key");
    let (rw_key, ro_key) = (
        rw["key"].as_str().expect("key"),
        ro["key"].as_str().expect("key"),
    );

    // Another tenant's resources look like missing ones; the tenant sees only itself.
    problem(
        api.get("/v1/tenants/demo", Some(rw_key)),
        StatusCode::NOT_FOUND,
    );
    problem(
        api.send("PUT", "/v1/tenants/demo", rw_key, Some(&demo()), Some("*")),
        StatusCode::NOT_FOUND,
    );
    problem(
        api.send("DELETE", "/v1/tenants/demo", rw_key, None, None),
        StatusCode::NOT_FOUND,
    );
    problem(
        api.get("/v1/tenants/demo/keys", Some(rw_key)),
        StatusCode::NOT_FOUND,
    );
    // The same for call logs, recordings, voicemail and live-call actions.
    for path in [
        "/v1/tenants/demo/call-logs",
        "/v1/tenants/demo/call-logs/stats",
        "/v1/tenants/demo/call-logs/1-1-0000",
        "/v1/tenants/demo/recordings",
        "/v1/tenants/demo/recordings/1-1-1.wav",
        "/v1/tenants/demo/mailboxes/100/messages",
        "/v1/tenants/demo/mailboxes/100/messages/x/audio",
        "/v1/tenants/demo/audit",
        "/v1/tenants/demo/prompts",
        "/v1/tenants/demo/prompts/welcome",
    ] {
        problem(api.get(path, Some(rw_key)), StatusCode::NOT_FOUND);
    }
    for (method, path, body) in [
        ("DELETE", "/v1/tenants/demo/recordings/1-1-1.wav", None),
        ("DELETE", "/v1/tenants/demo/mailboxes/100/messages/x", None),
        ("DELETE", "/v1/tenants/demo/prompts/welcome", None),
        (
            "POST",
            "/v1/tenants/demo/calls/1/transfer",
            Some(json!({"destination": "100"})),
        ),
        ("POST", "/v1/tenants/demo/calls/1/recording", None),
    ] {
        problem(
            api.send(method, path, rw_key, body.as_ref(), None),
            StatusCode::NOT_FOUND,
        );
    }
    let own: Value = api
        .get("/v1/tenants/acme/call-logs", Some(rw_key))
        .json()
        .expect("json");
    assert_eq!(own["items"].as_array().map(Vec::len), Some(0));
    let mine: Value = api.get("/v1/tenants", Some(rw_key)).json().expect("json");
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(mine["items"][0]["id"], "acme");
    let r = api.get("/v1/tenants/acme", Some(ro_key));
    assert_eq!(r.status(), StatusCode::OK);
    let tag = r.headers()["etag"].to_str().expect("etag").to_string();
    let doc: Value = r.json().expect("doc");
    assert!(doc["users"][0].get("password").is_none());
    // Read-only keys cannot write; the read-write key can.
    problem(
        api.send("PUT", "/v1/tenants/acme", ro_key, Some(&doc), Some(&tag)),
        StatusCode::FORBIDDEN,
    );
    let mut renamed = doc.clone();
    renamed["name"] = json!("Acme Inc");
    assert_eq!(
        api.send(
            "PUT",
            "/v1/tenants/acme",
            rw_key,
            Some(&renamed),
            Some(&tag)
        )
        .status(),
        StatusCode::OK
    );
    // Key management is the admin's; revoked keys stop working at once.
    problem(
        api.send(
            "POST",
            "/v1/tenants/acme/keys",
            rw_key,
            Some(&json!({"name": "x"})),
            None,
        ),
        StatusCode::FORBIDDEN,
    );
    let keys: Value = api
        .get("/v1/tenants/acme/keys", Some(ADMIN_KEY))
        .json()
        .expect("keys");
    assert_eq!(keys["items"].as_array().map(Vec::len), Some(2));
    assert!(
        keys["items"][0].get("key").is_none(),
        "stored keys are never shown again"
    );
    let id = ro["id"].as_str().expect("id");
    assert_eq!(
        api.send(
            "DELETE",
            &format!("/v1/tenants/acme/keys/{id}"),
            ADMIN_KEY,
            None,
            None
        )
        .status(),
        StatusCode::NO_CONTENT
    );
    problem(
        api.get("/v1/tenants/acme", Some(ro_key)),
        StatusCode::UNAUTHORIZED,
    );
    assert_eq!(
        api.send("DELETE", "/v1/tenants/acme", ADMIN_KEY, None, None)
            .status(),
        StatusCode::NO_CONTENT
    );
    problem(
        api.get("/v1/tenants/acme", Some(rw_key)),
        StatusCode::UNAUTHORIZED,
    );
}

#[test]
fn etags_and_validation_problems() {
    let p = ports();
    let server = Server::start(&p, &[]);
    let api = Api::new(&server);
    let r = api.get("/v1/tenants/demo", Some(ADMIN_KEY));
    let tag = r.headers()["etag"].to_str().expect("etag").to_string();
    let doc: Value = r.json().expect("doc");
    problem(
        api.send("PUT", "/v1/tenants/demo", ADMIN_KEY, Some(&doc), None),
        StatusCode::PRECONDITION_REQUIRED,
    );
    let mut a = doc.clone();
    a["name"] = json!("First admin");
    let r = api.send("PUT", "/v1/tenants/demo", ADMIN_KEY, Some(&a), Some(&tag));
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(r.headers()["etag"].to_str().expect("etag"), tag);
    // The second admin still holds the old ETag.
    let mut b = doc.clone();
    b["name"] = json!("Second admin");
    problem(
        api.send("PUT", "/v1/tenants/demo", ADMIN_KEY, Some(&b), Some(&tag)),
        StatusCode::PRECONDITION_FAILED,
    );
    // Validation: every problem named by path.
    let fresh = api.get("/v1/tenants/demo", Some(ADMIN_KEY));
    let tag = fresh.headers()["etag"].to_str().expect("etag").to_string();
    let mut bad: Value = fresh.json().expect("doc");
    bad["ivrs"]["main"]["routes"][0]["target"]["extension"] = json!("107");
    bad["numbers"][0]["number"] = json!("5550100");
    let pr = problem(
        api.send("PUT", "/v1/tenants/demo", ADMIN_KEY, Some(&bad), Some(&tag)),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let paths: Vec<&str> = pr["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(paths.contains(&"ivrs.main.routes.0"), "{pr}");
    assert!(paths.contains(&"numbers.0.number"), "{pr}");
    // A body that is not a tenant document: 400 naming the field.
    let mut typo = doc.clone();
    typo["domainz"] = json!([]);
    let pr = problem(
        api.send(
            "PUT",
            "/v1/tenants/demo",
            ADMIN_KEY,
            Some(&typo),
            Some(&tag),
        ),
        StatusCode::BAD_REQUEST,
    );
    assert!(
        pr["detail"].as_str().is_some_and(|d| d.contains("domainz")),
        "{pr}"
    );
}

#[test]
fn failed_api_authentication_is_rate_limited() {
    let p = ports();
    let server = Server::start(&p, &[]);
    let api = Api::new(&server);
    let mut last = StatusCode::OK;
    for _ in 0..25 {
        last = api.get("/v1/tenants", Some("guess")).status();
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // The right key still works from that address (every admin behind one proxy shares it).
    assert_eq!(
        api.get("/v1/tenants", Some(ADMIN_KEY)).status(),
        StatusCode::OK
    );
}

/// A number added through the API is reachable by the very next call.
#[test]
fn change_through_the_api_reaches_the_next_call() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let api = Api::new(&server);
    let call = ["-m", "1", "-s", "+15550888", "-d", "100"];
    assert!(
        !sipp(&server, &p, "invite_trunk.xml", &call).0,
        "number must not exist yet"
    );
    let r = api.get("/v1/tenants/demo", Some(ADMIN_KEY));
    let tag = r.headers()["etag"].to_str().expect("etag").to_string();
    let mut doc: Value = r.json().expect("doc");
    doc["numbers"]
        .as_array_mut()
        .expect("numbers")
        .push(json!({"number": "+15550888", "target": {"type": "echo"}}));
    assert_eq!(
        api.send("PUT", "/v1/tenants/demo", ADMIN_KEY, Some(&doc), Some(&tag))
            .status(),
        StatusCode::OK
    );
    let (ok, out) = sipp(&server, &p, "invite_trunk.xml", &call);
    assert!(ok, "{out}");
    // Passwords given only as hashes survive a GET/PUT round trip: user 100 still registers.
    let (ok, out) = sipp(
        &server,
        &p,
        "register.xml",
        &["-m", "1", "-s", "100", "-au", "100", "-ap", "demo100"],
    );
    assert!(ok, "{out}");
}

#[test]
fn live_calls_and_registrations() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let api = Api::new(&server);
    // Registrations of user 100.
    let (ok, out) = sipp(
        &server,
        &p,
        "register_only.xml",
        &["-m", "1", "-s", "100", "-au", "100", "-ap", "demo100"],
    );
    assert!(ok, "{out}");
    let regs: Value = api
        .get("/v1/tenants/demo/users/100/registrations", Some(ADMIN_KEY))
        .json()
        .expect("json");
    assert_eq!(regs.as_array().map(Vec::len), Some(1), "{regs}");
    assert!(regs[0]["uri"]
        .as_str()
        .is_some_and(|u| u.starts_with("sip:100@")));
    problem(
        api.get("/v1/tenants/demo/users/999/registrations", Some(ADMIN_KEY)),
        StatusCode::NOT_FOUND,
    );

    // A live call, listed and hung up from the API: SIPp gets our BYE in the middle of its pause.
    let sip_port = server.sip_port;
    let (sp, mp) = (p.sipp, p.sipp_media);
    let caller = std::thread::spawn(move || {
        std::process::Command::new("sipp")
            .arg("-sf")
            .arg(repo().join("integration/sipp/invite_trunk.xml"))
            .arg(format!("127.0.0.1:{sip_port}"))
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &(sp + 2).to_string(),
                "-mp",
                &(mp + 2).to_string(),
            ])
            .args([
                "-nostdin",
                "-m",
                "1",
                "-s",
                "+15550600",
                "-d",
                "20000",
                "-timeout",
                "30s",
            ])
            .output()
            .expect("sipp")
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let call = loop {
        let calls: Value = api
            .get("/v1/tenants/demo/calls", Some(ADMIN_KEY))
            .json()
            .expect("json");
        if let Some(c) = calls["items"]
            .as_array()
            .and_then(|a| a.first())
            .filter(|c| c["state"] == "up")
        {
            break c.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "call never listed: {calls}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(call["codec"], "PCMU");
    assert!(call["target"].as_str().is_some_and(|t| t.contains("Echo")));
    // Another tenant's key sees nothing of it.
    let acme_key = &acme_with_key(&api);
    problem(
        api.get("/v1/tenants/demo/calls", Some(acme_key)),
        StatusCode::NOT_FOUND,
    );
    let id = call["id"].as_u64().expect("id");
    problem(
        api.send(
            "DELETE",
            &format!("/v1/tenants/acme/calls/{id}"),
            acme_key,
            None,
            None,
        ),
        StatusCode::NOT_FOUND,
    );
    assert_eq!(
        api.send(
            "DELETE",
            &format!("/v1/tenants/demo/calls/{id}"),
            ADMIN_KEY,
            None,
            None
        )
        .status(),
        StatusCode::NO_CONTENT
    );
    let out = caller.join().expect("join");
    // SIPp was in its pause when our BYE came: it reports that as an unexpected message.
    assert!(!out.status.success());
    let calls: Value = api
        .get("/v1/tenants/demo/calls", Some(ADMIN_KEY))
        .json()
        .expect("json");
    assert_eq!(calls["items"].as_array().map(Vec::len), Some(0), "{calls}");
    assert!(server.log_text().contains("hung up through the admin API"));
}

#[test]
fn users_with_password_set_and_reset() {
    if !peer_available("sipp") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let api = Api::new(&server);
    let register = |user: &str, pw: &str| {
        sipp(
            &server,
            &p,
            "register_only.xml",
            &["-m", "1", "-s", user, "-au", user, "-ap", pw],
        )
        .0
    };
    let users: Value = api
        .get("/v1/tenants/demo/users", Some(ADMIN_KEY))
        .json()
        .expect("json");
    assert_eq!(users["items"].as_array().map(Vec::len), Some(3));
    assert!(
        users["items"][0].get("ha1_md5").is_none(),
        "hashes are write-only"
    );

    // Create 103 with a password: it registers at once.
    let new = json!({"extension": "103", "username": "103", "display_name": "Dave", "password": "first-secret"});
    let r = api.send(
        "POST",
        "/v1/tenants/demo/users",
        ADMIN_KEY,
        Some(&new),
        None,
    );
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(register("103", "first-secret"));
    problem(
        api.send(
            "POST",
            "/v1/tenants/demo/users",
            ADMIN_KEY,
            Some(&new),
            None,
        ),
        StatusCode::CONFLICT,
    );
    let bad = json!({"extension": "1a", "username": "x1", "password": "whatever1"});
    let pr = problem(
        api.send(
            "POST",
            "/v1/tenants/demo/users",
            ADMIN_KEY,
            Some(&bad),
            None,
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(pr["errors"][0]["path"], "extension", "{pr}");

    // Change the display name with the user's own ETag; the password stays.
    let r = api.get("/v1/tenants/demo/users/103", Some(ADMIN_KEY));
    let tag = r.headers()["etag"].to_str().expect("etag").to_string();
    let mut u: Value = r.json().expect("user");
    u["display_name"] = json!("Dave D.");
    problem(
        api.send(
            "PUT",
            "/v1/tenants/demo/users/103",
            ADMIN_KEY,
            Some(&u),
            None,
        ),
        StatusCode::PRECONDITION_REQUIRED,
    );
    assert_eq!(
        api.send(
            "PUT",
            "/v1/tenants/demo/users/103",
            ADMIN_KEY,
            Some(&u),
            Some(&tag)
        )
        .status(),
        StatusCode::OK
    );
    problem(
        api.send(
            "PUT",
            "/v1/tenants/demo/users/103",
            ADMIN_KEY,
            Some(&u),
            Some(&tag),
        ),
        StatusCode::PRECONDITION_FAILED,
    );
    assert!(register("103", "first-secret"));

    // Reset the password: the old one is refused on the wire, the new one works.
    let short = json!({"password": "short"});
    problem(
        api.send(
            "PUT",
            "/v1/tenants/demo/users/103/password",
            ADMIN_KEY,
            Some(&short),
            None,
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let pw = json!({"password": "second-secret"});
    assert_eq!(
        api.send(
            "PUT",
            "/v1/tenants/demo/users/103/password",
            ADMIN_KEY,
            Some(&pw),
            None
        )
        .status(),
        StatusCode::NO_CONTENT
    );
    assert!(!register("103", "first-secret"));
    assert!(register("103", "second-secret"));

    // A user the IVR routes to cannot be deleted; the reference is named.
    let pr = problem(
        api.send(
            "DELETE",
            "/v1/tenants/demo/users/101",
            ADMIN_KEY,
            None,
            None,
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert!(
        pr["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .any(|e| e["path"] == "ivrs.main.routes.1"),
        "{pr}"
    );
    assert_eq!(
        api.send(
            "DELETE",
            "/v1/tenants/demo/users/103",
            ADMIN_KEY,
            None,
            None
        )
        .status(),
        StatusCode::NO_CONTENT
    );
    problem(
        api.get("/v1/tenants/demo/users/103", Some(ADMIN_KEY)),
        StatusCode::NOT_FOUND,
    );

    // Tenant isolation on users.
    let acme_key = &acme_with_key(&api);
    problem(
        api.get("/v1/tenants/demo/users", Some(acme_key)),
        StatusCode::NOT_FOUND,
    );
    problem(
        api.get("/v1/tenants/demo/users/100", Some(acme_key)),
        StatusCode::NOT_FOUND,
    );
    problem(
        api.send(
            "PUT",
            "/v1/tenants/demo/users/100/password",
            acme_key,
            Some(&pw),
            None,
        ),
        StatusCode::NOT_FOUND,
    );
    assert_eq!(
        api.get("/v1/tenants/acme/users", Some(acme_key)).status(),
        StatusCode::OK
    );
}

#[test]
fn lists_page_with_a_cursor() {
    let p = ports();
    let server = Server::start(&p, &[]);
    let api = Api::new(&server);
    // The demo's 100-102 and three more: six users, three pages of two.
    for ext in ["105", "103", "104"] {
        let user = json!({"extension": ext, "username": ext, "password": format!("secret-{ext}")});
        assert_eq!(
            api.send(
                "POST",
                "/v1/tenants/demo/users",
                ADMIN_KEY,
                Some(&user),
                None
            )
            .status(),
            StatusCode::CREATED
        );
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page: Value = api
            .get(
                &format!("/v1/tenants/demo/users?limit=2&cursor={cursor}"),
                Some(ADMIN_KEY),
            )
            .json()
            .expect("page");
        pages += 1;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2, "{page}");
        seen.extend(
            items
                .iter()
                .map(|u| u["extension"].as_str().expect("ext").to_string()),
        );
        match page.get("next_cursor") {
            Some(c) => cursor = c.as_str().expect("cursor").to_string(),
            None => break,
        }
        assert!(pages < 10, "paging never ends: {page}");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["100", "101", "102", "103", "104", "105"]);
    // One page of everything with the default limit.
    let all: Value = api
        .get("/v1/tenants/demo/users", Some(ADMIN_KEY))
        .json()
        .expect("all");
    assert_eq!(all["items"].as_array().map(Vec::len), Some(6), "{all}");
    assert!(all.get("next_cursor").is_none(), "{all}");
    let tenants: Value = api
        .get("/v1/tenants?limit=1", Some(ADMIN_KEY))
        .json()
        .expect("tenants");
    assert_eq!(tenants["items"][0]["id"], "demo", "{tenants}");
    assert!(tenants.get("next_cursor").is_none(), "{tenants}");

    // Limits out of 1-500 and cursors that are not ours are 422s naming the parameter; a
    // query that does not parse is a 400 naming it.
    for (path, param) in [
        ("/v1/tenants?limit=0", "limit"),
        ("/v1/tenants/demo/users?limit=0", "limit"),
        ("/v1/tenants/demo/keys?limit=501", "limit"),
        ("/v1/tenants/demo/calls?limit=0", "limit"),
        ("/v1/tenants/demo/calls?cursor=junk", "cursor"),
        ("/v1/tenants/demo/calls?cursor=-1", "cursor"),
        (
            "/v1/tenants/demo/mailboxes/100/messages?cursor=junk",
            "cursor",
        ),
    ] {
        let pr = problem(
            api.get(path, Some(ADMIN_KEY)),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
        assert_eq!(pr["errors"][0]["path"], param, "{path}: {pr}");
    }
    let pr = problem(
        api.get("/v1/tenants/demo/users?limit=two", Some(ADMIN_KEY)),
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(pr["errors"][0]["path"], "limit", "{pr}");
    let calls: Value = api
        .get("/v1/tenants/demo/calls?cursor=0", Some(ADMIN_KEY))
        .json()
        .expect("calls");
    assert_eq!(calls["items"].as_array().map(Vec::len), Some(0), "{calls}");
}

#[test]
fn tenant_sections_with_their_own_etags() {
    let p = ports();
    let server = Server::start(&p, &[]);
    let api = Api::new(&server);
    // IVR graph: validated as a whole.
    let r = api.get("/v1/tenants/demo/ivrs", Some(ADMIN_KEY));
    let tag = r.headers()["etag"].to_str().expect("etag").to_string();
    let mut ivrs: Value = r.json().expect("ivrs");
    assert!(ivrs["main"]["routes"].is_array());
    let trap = json!({
        "a": {"routes": [{"digits": "1", "target": {"type": "ivr", "menu": "b"}}], "on_exhausted": {"type": "ivr", "menu": "b"}},
        "b": {"routes": [{"digits": "1", "target": {"type": "ivr", "menu": "a"}}], "on_exhausted": {"type": "ivr", "menu": "a"}}
    });
    let mut looped = ivrs.clone();
    looped
        .as_object_mut()
        .expect("map")
        .extend(trap.as_object().expect("map").clone());
    let pr = problem(
        api.send(
            "PUT",
            "/v1/tenants/demo/ivrs",
            ADMIN_KEY,
            Some(&looped),
            Some(&tag),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert!(
        pr["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .any(|e| e["path"] == "ivrs.a"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("without exit"))),
        "{pr}"
    );
    ivrs["main"]["timeout_secs"] = json!(8);
    let r = api.send(
        "PUT",
        "/v1/tenants/demo/ivrs",
        ADMIN_KEY,
        Some(&ivrs),
        Some(&tag),
    );
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        api.send(
            "PUT",
            "/v1/tenants/demo/ivrs",
            ADMIN_KEY,
            Some(&ivrs),
            Some(&tag),
        ),
        StatusCode::PRECONDITION_FAILED,
    );
    let doc: Value = api
        .get("/v1/tenants/demo", Some(ADMIN_KEY))
        .json()
        .expect("doc");
    assert_eq!(doc["ivrs"]["main"]["timeout_secs"], 8);

    // Trunks: the password is write-only and kept when left out.
    let r = api.get("/v1/tenants/demo/trunks", Some(ADMIN_KEY));
    let tag = r.headers()["etag"].to_str().expect("etag").to_string();
    let mut trunks: Value = r.json().expect("trunks");
    trunks.as_array_mut().expect("list").push(json!({"id": "carrier", "address": "203.0.113.5:5060", "username": "acct", "password": "s3cret-pw", "allowed_prefixes": ["+1"]}));
    let r = api.send(
        "PUT",
        "/v1/tenants/demo/trunks",
        ADMIN_KEY,
        Some(&trunks),
        Some(&tag),
    );
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().expect("text");
    assert!(!text.contains("s3cret-pw"), "{text}");
    let all = api
        .get("/v1/tenants/demo", Some(ADMIN_KEY))
        .text()
        .expect("doc");
    assert!(!all.contains("s3cret-pw"));

    // Mailboxes: PIN hashes never come back.
    let r = api.get("/v1/tenants/demo/mailboxes", Some(ADMIN_KEY));
    let tag = r.headers()["etag"].to_str().expect("etag").to_string();
    let mut boxes: Value = r.json().expect("boxes");
    assert!(boxes[0].get("pin_hash").is_none());
    boxes[0]["pin"] = json!("9876");
    let r = api.send(
        "PUT",
        "/v1/tenants/demo/mailboxes",
        ADMIN_KEY,
        Some(&boxes),
        Some(&tag),
    );
    assert_eq!(r.status(), StatusCode::OK);
    let back: Value = r.json().expect("boxes");
    assert!(back[0].get("pin").is_none() && back[0].get("pin_hash").is_none());

    // Limits, outbound routes, settings, extensions: validated with the tenant, paths named.
    let r = api.get("/v1/tenants/demo/limits", Some(ADMIN_KEY));
    let tag = r.headers()["etag"].to_str().expect("etag").to_string();
    let pr = problem(
        api.send(
            "PUT",
            "/v1/tenants/demo/limits",
            ADMIN_KEY,
            Some(&json!({"max_concurrent_calls": 0})),
            Some(&tag),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(
        pr["errors"][0]["path"], "limits.max_concurrent_calls",
        "{pr}"
    );
    let r = api.get("/v1/tenants/demo/outbound-routes", Some(ADMIN_KEY));
    let tag = r.headers()["etag"].to_str().expect("etag").to_string();
    let route = json!([{"prefix": "+1", "trunk": "nope"}]);
    let pr = problem(
        api.send(
            "PUT",
            "/v1/tenants/demo/outbound-routes",
            ADMIN_KEY,
            Some(&route),
            Some(&tag),
        ),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(pr["errors"][0]["path"], "outbound_routes.0.trunk", "{pr}");
    let route = json!([{"name": "US", "prefix": "+1", "trunk": "carrier"}]);
    assert_eq!(
        api.send(
            "PUT",
            "/v1/tenants/demo/outbound-routes",
            ADMIN_KEY,
            Some(&route),
            Some(&tag)
        )
        .status(),
        StatusCode::OK
    );
    let settings: Value = api
        .get("/v1/tenants/demo/settings", Some(ADMIN_KEY))
        .json()
        .expect("settings");
    assert_eq!(settings["recording"], "never");
    let exts: Value = api
        .get("/v1/tenants/demo/extensions", Some(ADMIN_KEY))
        .json()
        .expect("extensions");
    assert!(exts
        .as_array()
        .expect("list")
        .iter()
        .any(|e| e["extension"] == "600"));

    // Numbers, and isolation.
    let r = api.get("/v1/tenants/demo/numbers", Some(ADMIN_KEY));
    assert_eq!(r.status(), StatusCode::OK);
    let acme_key = acme_with_key(&api);
    problem(
        api.get("/v1/tenants/demo/numbers", Some(&acme_key)),
        StatusCode::NOT_FOUND,
    );
    problem(
        api.send(
            "PUT",
            "/v1/tenants/demo/ivrs",
            &acme_key,
            Some(&ivrs),
            Some("*"),
        ),
        StatusCode::NOT_FOUND,
    );
}

/// The events one SSE stream (written by curl to `path`) carried: (event name, data JSON).
fn sse_events(path: &std::path::Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((name.clone(), serde_json::from_str(d).unwrap_or(Value::Null)));
        }
    }
    out
}

/// A tenant's live event stream (Server-Sent Events, read by curl with the tenant's
/// read-only key) shows a SIPp call from start to end: started (from, to, direction), the
/// app it runs, answered, each RFC 4733 digit, ended (disposition, cause, record id). Another tenant's
/// stream, open at the same time, carries none of it, and its key cannot open the first
/// tenant's stream (404, as for anything of another tenant's).
#[test]
fn a_tenants_event_stream_follows_a_call_from_start_to_end() {
    if !peer_available("sipp") || !peer_available("curl") {
        return;
    }
    let p = ports();
    let server = Server::start(&p, &[]);
    let api = Api::new(&server);
    let key: Value = api
        .send(
            "POST",
            "/v1/tenants/demo/keys",
            ADMIN_KEY,
            Some(&json!({"name": "dashboard", "read_only": true})),
            None,
        )
        .json()
        .expect("key");
    let demo_key = key["key"].as_str().expect("key").to_string();
    let acme_key = acme_with_key(&api);
    // Another tenant's key: told nothing, as for every other resource of the tenant.
    problem(
        api.get("/v1/tenants/demo/events", Some(&acme_key)),
        StatusCode::NOT_FOUND,
    );

    let dir = tempfile::tempdir().expect("tmp");
    let follow = |tenant: &str, key: &str, file: &str| {
        let out = std::fs::File::create(dir.path().join(file)).expect("file");
        std::process::Command::new("curl")
            .args(["-sN", "--max-time", "60", "-H"])
            .arg(format!("Authorization: Bearer {key}"))
            .arg(format!("{}/v1/tenants/{tenant}/events", api.base))
            .stdout(out)
            .spawn()
            .expect("curl")
    };
    let mut demo_stream = follow("demo", &demo_key, "demo.sse");
    let mut acme_stream = follow("acme", &acme_key, "acme.sse");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        metric_value(server.api_port, "switchyard_api_event_streams"),
        2.0,
        "both streams counted"
    );

    let (ok, out) = sipp_with_audio(
        &server,
        &p,
        "media_dtmf.xml",
        None,
        &["-s", "+15550601", "-d", "2500"],
    );
    assert!(ok, "sipp: {out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !sse_events(&dir.path().join("demo.sse"))
        .iter()
        .any(|(n, _)| n == "ended")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for c in [&mut demo_stream, &mut acme_stream] {
        let _ = c.kill();
        let _ = c.wait();
    }

    let events = sse_events(&dir.path().join("demo.sse"));
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["started", "app", "answered", "digit", "digit", "digit", "digit", "ended"],
        "{events:?}\n{}",
        server.log_text()
    );
    let call = &events[0].1["call"];
    assert!(events.iter().all(|(_, d)| &d["call"] == call), "{events:?}");
    let started = &events[0].1;
    assert_eq!(started["to"], "+15550601");
    assert_eq!(started["direction"], "inbound");
    assert!(started["from"].is_string() && started["call_id"].is_string());
    assert_eq!(events[1].1["app"], "prompt_loop", "{events:?}");
    assert_eq!(events[1].1["path"], "prompt_loop");
    let digits: Vec<&str> = events[3..7]
        .iter()
        .filter_map(|(_, d)| d["digit"].as_str())
        .collect();
    assert_eq!(digits, ["1", "2", "3", "#"]);
    let ended = &events[7].1;
    assert_eq!(ended["disposition"], "answered");
    assert_eq!(ended["hangup_cause"], "caller_hangup");
    assert!(ended["record"].is_string(), "{ended}");
    assert!(
        sse_events(&dir.path().join("acme.sse")).is_empty(),
        "another tenant's stream carried the call"
    );
}
