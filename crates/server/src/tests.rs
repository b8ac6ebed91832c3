//! The router, in-process, against the Attentive simulator: auth, CSRF, errors, paging.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

const TOKEN: &str = "test-token-0123456789abcdef";

struct Fixture {
    _dir: tempfile::TempDir,
    _sim: attentive_sim::RunningSim,
    app: Arc<App>,
    router: Router,
}

async fn fixture() -> Fixture {
    let sim = attentive_sim::Simulator::start(attentive_sim::SimConfig {
        contacts: (0..5)
            .map(|i| attentive_sim::SeedContact::email(format!("c{i}@example.com")))
            .collect(),
        ..attentive_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("email,city\n");
    for i in 0..5 {
        csv.push_str(&format!("c{i}@example.com,Austin\n"));
    }
    for i in 0..5 {
        csv.push_str(&format!("bad-{i},Austin\n"));
    }
    std::fs::write(dir.path().join("m.csv"), csv).unwrap();
    let config = format!(
        r#"[destinations.attentive]
api_key = "${{KEY}}"
base_url = "{}"

[models.m]
source = "csv"
path = "m.csv"

[activations.a]
model = "m"
destination = "attentive"
identifier = {{ column = "email", kind = "email" }}
[activations.a.standard]
city = "city"
"#,
        sim.base_url()
    );
    let path = dir.path().join("attentive-sync.toml");
    std::fs::write(&path, &config).unwrap();
    let project = runner::Project::parse(&path, &config, &|name| {
        (name == "KEY").then(|| attentive_sim::DEFAULT_KEY.to_owned())
    })
    .unwrap();
    let app = Arc::new(App::new(
        project,
        ServerToken::new(TOKEN, "test").unwrap(),
        Settings::default(),
    ));
    let (router, _) = router(&app);
    Fixture {
        _dir: dir,
        _sim: sim,
        app,
        router,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn call(router: &Router, req: Request<Body>) -> Answer {
    let r = router.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

fn form(uri: &str, cookie: Option<&str>, body: &str) -> Request<Body> {
    let mut b =
        Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

async fn wait_finished(f: &Fixture, id: i64) -> serde_json::Value {
    for _ in 0..400 {
        let r = call(&f.router, get(&format!("/api/v1/runs/{id}"), Some(TOKEN))).await;
        let v = r.json();
        if v["status"] != "running" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {id} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_the_token_and_answers_json_errors() {
    let f = fixture().await;
    for token in [None, Some("wrong"), Some("test-token-0123456789abcdeF")] {
        let r = call(&f.router, get("/api/v1/activations", token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(r.json()["error"]["code"], "unauthorized");
        assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
        assert!(!r.body.contains(TOKEN));
    }
    let r = call(&f.router, get("/api/v1/activations", Some(TOKEN))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()[0]["name"], "a");
    assert_eq!(r.json()[0]["running"], serde_json::Value::Null);

    // Open routes.
    for uri in ["/healthz", "/readyz", "/metrics", "/api/openapi.json"] {
        assert_eq!(
            call(&f.router, get(uri, None)).await.status,
            StatusCode::OK,
            "{uri}"
        );
    }

    // Errors.
    let r = call(&f.router, get("/api/v1/runs/999", Some(TOKEN))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "run_not_found");
    let r = call(&f.router, get("/api/v1/runs/abc", Some(TOKEN))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], "invalid_request");
    let r = call(&f.router, get("/api/v1/runs?limit=x", Some(TOKEN))).await;
    assert_eq!(r.json()["error"]["code"], "invalid_request");
    // Beyond the documented maximum: refused, not clamped.
    for uri in [
        "/api/v1/runs?limit=1001",
        "/api/v1/runs?limit=0",
        "/api/v1/runs/1/rows?limit=5000",
    ] {
        let r = call(&f.router, get(uri, Some(TOKEN))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(r.json()["error"]["code"], "invalid_request", "{uri}");
    }
    let r = call(&f.router, get("/api/v1/activations/zz/plan", Some(TOKEN))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "activation_not_found");
    let r = call(&f.router, get("/api/v1/contacts/not-a-phone", Some(TOKEN))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "invalid_contact");
    let r = call(&f.router, get("/nope", None)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_the_api_pages_its_rejected_rows() {
    let f = fixture().await;
    let r = call(
        &f.router,
        Request::post("/api/v1/activations/a/runs")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.json()["run_id"].as_i64().unwrap();
    assert_eq!(
        r.headers[header::LOCATION].to_str().unwrap(),
        format!("/api/v1/runs/{id}")
    );
    let run = wait_finished(&f, id).await;
    assert_eq!(run["status"], "partial", "{run}");
    assert_eq!(run["report"]["counts"]["updated"], 5);
    assert_eq!(run["report"]["counts"]["rejected"], 5);

    let page = |after: Option<u64>| {
        let uri = match after {
            Some(a) => format!("/api/v1/runs/{id}/rows?outcome=rejected&limit=2&after={a}"),
            None => format!("/api/v1/runs/{id}/rows?outcome=rejected&limit=2"),
        };
        call(&f.router, get(&uri, Some(TOKEN)))
    };
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let p = page(after).await.json();
        for r in p["rows"].as_array().unwrap() {
            assert_eq!(r["outcome"], "rejected");
            rows.push(r["row"].as_u64().unwrap());
        }
        match p["next_after"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(rows, [7, 8, 9, 10, 11]);
    let r = call(
        &f.router,
        get(&format!("/api/v1/runs/{id}/rows?outcome=nope"), Some(TOKEN)),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Issue 13: an `after` beyond i64::MAX answered 500.
    let r = call(
        &f.router,
        get(
            &format!("/api/v1/runs/{id}/rows?after=18446744073709551615"),
            Some(TOKEN),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "invalid_request");
    for uri in [
        "/api/v1/runs/18446744073709551615",
        "/api/v1/runs/18446744073709551615/rejected.csv",
    ] {
        let r = call(&f.router, get(uri, Some(TOKEN))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "invalid_request", "{uri}");
    }

    let csv = call(
        &f.router,
        get(&format!("/api/v1/runs/{id}/rejected.csv"), Some(TOKEN)),
    )
    .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], "row,contact,outcome,code,message,attributes");
    assert_eq!(lines.len(), 6, "{}", csv.body);
    assert!(lines[1].starts_with("7,,rejected,"), "{}", lines[1]);

    let c = call(
        &f.router,
        get("/api/v1/contacts/%20C1@Example.com", Some(TOKEN)),
    )
    .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    let c = c.json();
    assert_eq!(c["contact"], "c1@example.com");
    assert_eq!(c["activations"][0]["attributes"][0]["key"], "std:city");
    assert_eq!(c["activations"][0]["attributes"][0]["value"], "Austin");

    let list = call(
        &f.router,
        get("/api/v1/runs?activation=a&limit=5", Some(TOKEN)),
    )
    .await;
    assert_eq!(list.json()["runs"][0]["id"], id);
    assert_eq!(list.json()["next_before"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_logs_in_with_a_session_and_checks_csrf() {
    let f = fixture().await;
    // Not logged in: to the login page.
    let r = call(&f.router, get("/", None)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/login");
    let r = call(&f.router, get("/login", None)).await;
    assert!(r.body.contains("id=\"login-form\""), "{}", r.body);
    assert!(r.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));

    let r = call(&f.router, form("/login", None, "token=wrong")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.headers.contains_key(header::SET_COOKIE));

    let r = call(&f.router, form("/login", None, &format!("token={TOKEN}"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let set_cookie = r.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(set_cookie.contains("Path=/"), "{set_cookie}");
    assert!(!set_cookie.contains(TOKEN), "the token is never the cookie");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let page = call(
        &f.router,
        Request::get("/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"run-now-a\""), "{}", page.body);
    assert!(page.body.contains("id=\"preview-plan-a\""));
    assert!(!page.body.contains(TOKEN));
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();

    // A POST without the CSRF token, or with another one, is refused and starts nothing.
    for body in [
        String::new(),
        "csrf=".to_owned(),
        format!("csrf={}", "0".repeat(64)),
    ] {
        let r = call(&f.router, form("/activations/a/run", Some(&cookie), &body)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}");
        assert!(r.body.contains("csrf_failed"));
    }
    assert!(f.app.runs.get("a").is_none());
    // Without a session: to the login page.
    let r = call(
        &f.router,
        form("/activations/a/run", None, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.headers[header::LOCATION], "/login");

    let r = call(
        &f.router,
        form("/activations/a/run", Some(&cookie), &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let location = r.headers[header::LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with("/runs/"), "{location}");
    let id: i64 = location.trim_start_matches("/runs/").parse().unwrap();
    wait_finished(&f, id).await;
    let run = call(
        &f.router,
        Request::get(&location)
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(run.body.contains("data-status=\"partial\""), "{}", run.body);
    assert!(
        run.body.contains("class=\"count count-updated\""),
        "{}",
        run.body
    );
    assert!(
        !run.body.contains("http-equiv=\"refresh\""),
        "a finished run does not refresh"
    );

    let plan = call(
        &f.router,
        Request::get("/activations/a/plan")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(plan.status, StatusCode::OK);
    assert!(plan.body.contains("id=\"plan-counts\""), "{}", plan.body);

    // Logout needs the CSRF token too, then the session is gone.
    let r = call(&f.router, form("/logout", Some(&cookie), "")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(
        &f.router,
        form("/logout", Some(&cookie), &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = call(
        &f.router,
        Request::get("/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.headers[header::LOCATION], "/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_api_route() {
    let f = fixture().await;
    let r = call(&f.router, get("/api/openapi.json", None)).await;
    let doc = r.json();
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for p in [
        "/api/v1/activations",
        "/api/v1/activations/{name}/runs",
        "/api/v1/activations/{name}/plan",
        "/api/v1/runs",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/rows",
        "/api/v1/runs/{id}/rejected.csv",
        "/api/v1/contacts/{contact}",
        "/api/v1/alerts",
        "/api/v1/notifications",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}
