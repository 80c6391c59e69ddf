//! The gateway's REST and SSE surface, driven through `router(state)` without a socket, over an
//! in-memory read model and a fake orchestrator that runs the real core state machine.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use distriqueue_core::JobResponse;
use distriqueue_gateway::{router, AppState, GatewayConfig};
use distriqueue_store::{JobQuery, Store};
use distriqueue_util::clock;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use common::FakeOrchestrator;

mod common;

struct Harness {
    app: Router,
    state: AppState,
    store: Store,
    orchestrator: Arc<FakeOrchestrator>,
}

async fn harness() -> Harness {
    let store = Store::open("sqlite::memory:").await.expect("store opens");
    let orchestrator = Arc::new(FakeOrchestrator::new());
    let config = GatewayConfig {
        sse_keep_alive: Duration::from_secs(3600),
        ..GatewayConfig::default()
    };
    let state = AppState::new(store.clone(), orchestrator.clone(), config);
    Harness {
        app: router(state.clone()),
        state,
        store,
        orchestrator,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                panic!(
                    "{status}: body is not JSON ({error}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).expect("request"))
            .await
    }

    async fn post_json(&self, uri: &str, body: Value) -> Answer {
        self.post_raw(uri, body.to_string()).await
    }

    async fn post_raw(&self, uri: &str, body: impl Into<Body>) -> Answer {
        self.send(
            Request::post(uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.into())
                .expect("request"),
        )
        .await
    }

    async fn submit(&self, job_type: &str, priority: &str) -> JobResponse {
        let answer = self
            .post_json(
                "/api/jobs",
                json!({"type": job_type, "jobPriority": priority, "payload": {"n": 1}}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        serde_json::from_value(answer.body).expect("a JobResponse")
    }

    async fn n_stored(&self) -> u64 {
        let query = JobQuery {
            size: 100,
            ..JobQuery::default()
        };
        self.store
            .list(&query)
            .await
            .expect("store lists")
            .total_elements
    }

    /// Nothing reached the orchestrator nor the read model.
    async fn assert_nothing_stored(&self) {
        assert_eq!(self.n_stored().await, 0, "read model is empty");
        assert_eq!(self.orchestrator.n_jobs_known(), 0, "nothing registered");
    }
}

/// `{"error": <text>}` and nothing else besides optional violations.
fn error_text(answer: &Answer) -> &str {
    assert_eq!(
        answer
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok()),
        Some("application/json"),
        "error bodies are JSON"
    );
    answer.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text in {}", answer.body))
}

/// 400 `{"error":"Validation failed","violations":{field: ...}}` naming exactly `fields`.
fn check_violations(answer: &Answer, fields: &[&str]) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(error_text(answer), "Validation failed");
    let violations = answer.body["violations"]
        .as_object()
        .unwrap_or_else(|| panic!("no violations in {}", answer.body));
    let named: Vec<&str> = violations.keys().map(String::as_str).collect();
    assert_eq!(named, fields, "{}", answer.body);
    assert!(violations.values().all(Value::is_string));
}

async fn check_submit_refused(body: Value, fields: &[&str]) {
    let harness = harness().await;
    let answer = harness.post_json("/api/jobs", body).await;
    check_violations(&answer, fields);
    harness.assert_nothing_stored().await;
}

#[tokio::test]
async fn submit_without_type_is_refused_naming_it() {
    check_submit_refused(json!({"jobPriority": "HIGH"}), &["type"]).await;
}

#[tokio::test]
async fn submit_with_unknown_priority_is_refused_naming_it() {
    check_submit_refused(
        json!({"type": "echo", "jobPriority": "URGENT"}),
        &["jobPriority"],
    )
    .await;
}

#[tokio::test]
async fn submit_with_payload_not_an_object_is_refused_naming_it() {
    check_submit_refused(
        json!({"type": "echo", "jobPriority": "LOW", "payload": [1, 2]}),
        &["payload"],
    )
    .await;
}

#[tokio::test]
async fn submit_with_callback_url_is_refused_naming_it() {
    check_submit_refused(
        json!({"type": "echo", "jobPriority": "LOW", "callbackUrl": "http://example.test/hook"}),
        &["callbackUrl"],
    )
    .await;
}

fn keyed_submit(header_key: Option<&str>, body: Value) -> Request<Body> {
    let mut request = Request::post("/api/jobs").header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = header_key {
        request = request.header("Idempotency-Key", key);
    }
    request.body(Body::from(body.to_string())).expect("request")
}

#[tokio::test]
async fn repeated_idempotency_key_answers_200_with_the_first_job() {
    let harness = harness().await;
    let echo = json!({"type": "echo", "jobPriority": "LOW"});
    let first = harness.send(keyed_submit(Some("abc"), echo.clone())).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let again = harness.send(keyed_submit(Some("abc"), echo.clone())).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["id"], first.body["id"]);
    let by_field = harness
        .send(keyed_submit(
            None,
            json!({"type": "echo", "jobPriority": "LOW", "idempotencyKey": "abc"}),
        ))
        .await;
    assert_eq!(
        (by_field.status, &by_field.body["id"]),
        (StatusCode::OK, &first.body["id"])
    );
    assert_eq!(harness.n_stored().await, 1, "one job");

    let blank = harness.send(keyed_submit(Some(" "), echo.clone())).await;
    check_violations(&blank, &["Idempotency-Key"]);
    let conflicting = harness
        .send(keyed_submit(
            Some("x"),
            json!({"type": "echo", "jobPriority": "LOW", "idempotencyKey": "y"}),
        ))
        .await;
    check_violations(&conflicting, &["Idempotency-Key"]);
    assert_eq!(
        harness.n_stored().await,
        1,
        "refused submissions store nothing"
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_with_the_contract_shape() {
    let harness = harness().await;
    for body in ["{\"type\": \"echo\",", "not json", ""] {
        let answer = harness.post_raw("/api/jobs", body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert!(
            error_text(&answer).starts_with("malformed JSON: "),
            "{}",
            answer.body
        );
    }
    harness.assert_nothing_stored().await;
}

#[tokio::test]
async fn wrong_content_type_is_a_415_with_the_contract_shape() {
    let harness = harness().await;
    let answer = harness
        .send(
            Request::post("/api/jobs")
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(
                    json!({"type": "echo", "jobPriority": "LOW"}).to_string(),
                ))
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(error_text(&answer).contains("text/plain"));
    harness.assert_nothing_stored().await;
}

#[tokio::test]
async fn ten_megabyte_body_is_a_413_with_the_contract_shape() {
    let harness = harness().await;
    let padding = "x".repeat(10 * 1024 * 1024);
    let body =
        json!({"type": "echo", "jobPriority": "LOW", "payload": {"pad": padding}}).to_string();

    // With a Content-Length, as curl and reqwest send it.
    let answer = harness
        .send(
            Request::post("/api/jobs")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, body.len())
                .body(Body::from(body.clone()))
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_text(&answer).contains("limit"), "{}", answer.body);

    // Streamed without a length (chunked).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .into_bytes()
        .chunks(64 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let answer = harness
        .post_raw(
            "/api/jobs",
            Body::from_stream(futures::stream::iter(chunks)),
        )
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    error_text(&answer);
    harness.assert_nothing_stored().await;
}

#[tokio::test]
async fn submit_then_immediate_get_finds_the_job() {
    let harness = harness().await;
    let answer = harness
        .post_json(
            "/api/jobs",
            json!({"type": "calculate", "jobPriority": "HIGH",
                   "payload": {"operation": "sum", "numbers": [1, 2, 3, 4, 5]}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let id = answer.body["id"].as_str().expect("id").to_string();
    assert_eq!(
        answer.headers.get(header::LOCATION).expect("Location"),
        &format!("/api/jobs/{id}")
    );
    assert_eq!(answer.body["jobStatus"], "QUEUED");
    assert_eq!(answer.body["jobPriority"], "HIGH");
    assert_eq!(answer.body["type"], "calculate");
    assert_eq!(answer.body["queue_time_ms"], 0);
    assert_eq!(answer.body["execution_time_ms"], 0);

    let fetched = harness.get(&format!("/api/jobs/{id}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body, answer.body);
}

#[tokio::test]
async fn get_of_unknown_or_malformed_id_is_a_404() {
    let harness = harness().await;
    let answer = harness.get("/api/jobs/not-a-uuid").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(error_text(&answer), "Job not found: not-a-uuid");

    let unknown = clock::new_job_id();
    let answer = harness.get(&format!("/api/jobs/{unknown}")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(error_text(&answer), format!("Job not found: {unknown}"));
}

#[tokio::test]
async fn orchestrator_unavailable_is_a_503_and_nothing_is_stored() {
    let harness = harness().await;
    harness
        .orchestrator
        .unavailable
        .store(true, Ordering::SeqCst);
    let answer = harness
        .post_json("/api/jobs", json!({"type": "echo", "jobPriority": "LOW"}))
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_text(&answer).contains("unavailable"));
    harness.assert_nothing_stored().await;
}

#[tokio::test]
async fn list_filters_pages_and_sorts() {
    let harness = harness().await;
    let low = harness.submit("echo", "LOW").await;
    let high = harness.submit("calculate", "HIGH").await;
    let critical = harness.submit("echo", "critical").await;
    harness.orchestrator.complete(low.id, json!({"echo": true}));
    // The completion reaches the read model through the event feed.
    let mut stored_upto = harness.state.consume_events(
        harness
            .orchestrator
            .broker
            .take_event_receiver()
            .expect("receiver"),
        distriqueue_gateway::FeedRole::Store,
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        stored_upto.wait_for(|seq| *seq >= 5),
    )
    .await
    .expect("events stored in time")
    .expect("feed alive");

    let ids = |answer: &Answer| -> Vec<String> {
        answer.body["content"]
            .as_array()
            .expect("content")
            .iter()
            .map(|job| job["id"].as_str().expect("id").to_string())
            .collect()
    };

    let all = harness.get("/api/jobs").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        all.body["page"],
        json!({"size": 20, "number": 0, "totalElements": 3, "totalPages": 1})
    );

    let echo = harness
        .get("/api/jobs?type=echo&sortBy=priority&sortDirection=asc")
        .await;
    assert_eq!(ids(&echo), [low.id.to_string(), critical.id.to_string()]);

    let by_priority = harness.get("/api/jobs?priority=high").await;
    assert_eq!(ids(&by_priority), [high.id.to_string()]);

    let completed = harness.get("/api/jobs?status=completed").await;
    assert_eq!(ids(&completed), [low.id.to_string()]);
    assert_eq!(completed.body["content"][0]["workerId"], "worker-1");

    let by_worker = harness
        .get("/api/jobs?workerId=worker-1&jobStatus=COMPLETED")
        .await;
    assert_eq!(ids(&by_worker), [low.id.to_string()]);

    let paged = harness.get("/api/jobs?size=2&page=1").await;
    assert_eq!(
        paged.body["page"],
        json!({"size": 2, "number": 1, "totalElements": 3, "totalPages": 2})
    );
    assert_eq!(ids(&paged).len(), 1);

    let future = harness
        .get("/api/jobs?createdFrom=2999-01-01T00:00:00")
        .await;
    assert_eq!(future.body["page"]["totalElements"], 0);
    let past = harness
        .get("/api/jobs?createdTo=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(past.body["page"]["totalElements"], 3);
}

#[tokio::test]
async fn list_with_bad_parameters_is_a_400_naming_them() {
    let harness = harness().await;
    let answer = harness.get("/api/jobs?sortBy=color").await;
    check_violations(&answer, &["sortBy"]);

    let answer = harness.get("/api/jobs?size=1000").await;
    check_violations(&answer, &["size"]);
    assert_eq!(
        answer.body["violations"]["size"],
        "must be between 1 and 100"
    );

    let answer = harness
        .get("/api/jobs?page=-1&status=done&createdFrom=yesterday&sortDirection=up")
        .await;
    check_violations(&answer, &["createdFrom", "page", "sortDirection", "status"]);
}

#[tokio::test]
async fn cancel_of_queued_job_is_200_cancelled_and_stored() {
    let harness = harness().await;
    let job = harness.submit("echo", "LOW").await;
    let answer = harness
        .post_raw(&format!("/api/jobs/{}/cancel", job.id), "")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["jobStatus"], "CANCELLED");

    let fetched = harness.get(&format!("/api/jobs/{}", job.id)).await;
    assert_eq!(fetched.body["jobStatus"], "CANCELLED");
}

#[tokio::test]
async fn cancel_of_unknown_job_is_a_404() {
    let harness = harness().await;
    let unknown = clock::new_job_id();
    let answer = harness
        .post_raw(&format!("/api/jobs/{unknown}/cancel"), "")
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(error_text(&answer), format!("Job not found: {unknown}"));

    let answer = harness.post_raw("/api/jobs/not-a-uuid/cancel", "").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    error_text(&answer);
}

#[tokio::test]
async fn cancel_of_terminal_job_is_a_409() {
    let harness = harness().await;
    let job = harness.submit("echo", "LOW").await;
    harness.orchestrator.complete(job.id, json!({"ok": true}));
    let answer = harness
        .post_raw(&format!("/api/jobs/{}/cancel", job.id), "")
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert!(error_text(&answer).contains("COMPLETED"), "{}", answer.body);

    let cancelled = harness.submit("echo", "LOW").await;
    let cancel_uri = format!("/api/jobs/{}/cancel", cancelled.id);
    assert_eq!(
        harness.post_raw(&cancel_uri, "").await.status,
        StatusCode::OK
    );
    let again = harness.post_raw(&cancel_uri, "").await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    error_text(&again);
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_in_the_contract_shape() {
    let harness = harness().await;
    let answer = harness.get("/api/nothing-here").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    error_text(&answer);

    let answer = harness
        .send(
            Request::builder()
                .method(Method::DELETE)
                .uri("/api/jobs")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    error_text(&answer);
    let allow = answer
        .headers
        .get(header::ALLOW)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    assert!(allow.contains("POST") && allow.contains("GET"), "{allow}");
}

#[tokio::test]
async fn health_is_up() {
    let harness = harness().await;
    let answer = harness.get("/api/actuator/health").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "UP");
}

/// Reads SSE frames from a response body until `n_events` whole events (blank-line ended)
/// arrived; returns each event's lines.
async fn read_events(body: &mut Body, n_events: usize) -> Vec<Vec<String>> {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events: Vec<Vec<String>> = text
            .split("\n\n")
            .filter(|block| !block.is_empty())
            .map(|block| block.lines().map(str::to_string).collect())
            .collect();
        let n_complete = text.matches("\n\n").count();
        if n_complete >= n_events {
            return events.into_iter().take(n_events).collect();
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for SSE events; got {text:?}"))
            .expect("stream open")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).expect("utf-8"));
        }
    }
}

fn field<'a>(event: &'a [String], name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    event
        .iter()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {event:?}"))
}

#[tokio::test]
async fn sse_streams_connected_then_each_stored_transition_on_one_line() {
    let harness = harness().await;
    let mut stored_upto = harness.state.consume_events(
        harness
            .orchestrator
            .broker
            .take_event_receiver()
            .expect("receiver"),
        distriqueue_gateway::FeedRole::Store,
    );

    let response = harness
        .app
        .clone()
        .oneshot(
            Request::get("/api/jobs/stream")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("router is infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).expect("type"),
        "text/event-stream"
    );
    let mut body = response.into_body();

    let connected = read_events(&mut body, 1).await.remove(0);
    assert_eq!(field(&connected, "event"), "connected");
    assert_eq!(field(&connected, "id"), "0");
    let data: Value = serde_json::from_str(field(&connected, "data")).expect("JSON");
    assert!(data["clientId"].is_string() && data["timestamp"].is_string());

    let job = harness.submit("calculate", "HIGH").await;
    harness.orchestrator.complete(job.id, json!({"sum": 15}));

    let events = read_events(&mut body, 3).await;
    let mut statuses = Vec::new();
    for (event, expected_id) in events.iter().zip(1..) {
        assert_eq!(event.len(), 3, "event, id and one data line: {event:?}");
        assert_eq!(field(event, "event"), "job-update");
        assert_eq!(field(event, "id"), expected_id.to_string());
        let data: Value = serde_json::from_str(field(event, "data")).expect("JSON");
        assert_eq!(data["jobId"], job.id.to_string());
        assert!(data["timestamp"]
            .as_str()
            .expect("timestamp")
            .ends_with('Z'));
        assert!(data.get("workerId").is_some(), "{data}");
        statuses.push(data["status"].as_str().expect("status").to_string());
        if data["status"] == "COMPLETED" {
            assert_eq!(data["result"], json!({"sum": 15}));
            assert_eq!(data["workerId"], "worker-1");
        } else {
            assert!(data.get("result").is_none(), "{data}");
        }
    }
    assert_eq!(statuses, ["QUEUED", "RUNNING", "COMPLETED"]);

    // Each event was stored before it was streamed, and the watermark says so.
    assert!(*stored_upto.borrow_and_update() >= 3);
    let fetched = harness.get(&format!("/api/jobs/{}", job.id)).await;
    assert_eq!(fetched.body["jobStatus"], "COMPLETED");

    // Shutdown ends the stream.
    harness.state.streams_closed().cancel();
    let end = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("stream ends at shutdown");
    assert!(end.is_none(), "no frame after shutdown");
}

#[tokio::test]
async fn sse_filters_by_job_id_and_type() {
    let harness = harness().await;
    harness.state.consume_events(
        harness
            .orchestrator
            .broker
            .take_event_receiver()
            .expect("receiver"),
        distriqueue_gateway::FeedRole::Store,
    );
    let open = |uri: String| {
        let app = harness.app.clone();
        async move {
            app.oneshot(Request::get(uri).body(Body::empty()).expect("request"))
                .await
                .expect("router is infallible")
                .into_body()
        }
    };
    let first = harness.submit("echo", "LOW").await;
    let mut by_type = open("/api/jobs/stream?type=calculate".to_string()).await;
    let second = harness.submit("echo", "LOW").await;
    let mut by_id = open(format!("/api/jobs/stream?jobId={}", second.id)).await;
    harness.orchestrator.complete(first.id, json!({}));
    harness.orchestrator.complete(second.id, json!({}));
    let third = harness.submit("calculate", "LOW").await;

    let events = read_events(&mut by_id, 3).await;
    for event in &events[1..] {
        let data: Value = serde_json::from_str(field(event, "data")).expect("JSON");
        assert_eq!(data["jobId"], second.id.to_string());
    }
    let events = read_events(&mut by_type, 2).await;
    let data: Value = serde_json::from_str(field(&events[1], "data")).expect("JSON");
    assert_eq!(data["jobId"], third.id.to_string());

    let answer = harness.get("/api/jobs/stream?jobId=nope").await;
    check_violations(&answer, &["jobId"]);
}

/// The OpenAPI document lists exactly the routes the router serves (the router walked through
/// its own description), and every documented answer to a route that exists is not the
/// router's own 404 or 405.
#[tokio::test]
async fn the_openapi_document_lists_every_route_the_router_serves() {
    let harness = harness().await;
    let served = distriqueue_testkit::router_routes(&format!("{:?}", harness.app));
    let document = serde_json::to_value(distriqueue_gateway::openapi()).expect("JSON");
    let documented = distriqueue_testkit::openapi_routes(&document);
    assert_eq!(served, documented);
    assert_eq!(document["openapi"], "3.1.0");
    let served_document = harness.get("/api/v3/api-docs").await;
    assert_eq!(served_document.status, StatusCode::OK);
    assert_eq!(served_document.body, document);
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_under_a_same_origin_policy() {
    let h = harness().await;
    for (uri, content_type) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let response = h
            .app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("router is infallible");
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let header_text = |name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            header_text(header::CONTENT_TYPE).starts_with(content_type),
            "{uri}"
        );
        assert!(
            header_text(header::CONTENT_SECURITY_POLICY).contains("default-src 'none'"),
            "{uri}"
        );
    }
    let missing = h.get("/dashboard/secret.js").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(!error_text(&missing).is_empty());
    let root = h.get("/").await;
    assert_eq!(root.status, StatusCode::SEE_OTHER);
    assert_eq!(root.headers[header::LOCATION], "/dashboard");
    let auth = h.get("/api/auth").await;
    assert_eq!(auth.status, StatusCode::OK);
    assert_eq!(
        auth.body,
        json!({"keyRequired": false, "roles": [], "publicReads": false})
    );
}

#[tokio::test]
async fn the_dashboard_routes_refuse_bad_input_with_the_contract_shape() {
    let h = harness().await;
    for minutes in ["0", "1441", "abc", "-1"] {
        let answer = h
            .get(&format!("/api/jobs/timeline?minutes={minutes}"))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{minutes}");
        check_violations(&answer, &["minutes"]);
    }
    let answer = h.get("/api/jobs/timeline").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["bucketSeconds"], 60);
    assert_eq!(answer.body["buckets"], json!([]));
    assert_eq!(h.get("/api/dead-letters").await.body, json!({"groups": []}));

    let status = h
        .post_json(
            "/api/dead-letters/retry",
            json!({"type": "echo", "status": "COMPLETED"}),
        )
        .await;
    assert_eq!(status.status, StatusCode::BAD_REQUEST);
    check_violations(&status, &["status"]);
    for body in [
        json!({"type": "echo", "status": "FAILED", "extra": 1}),
        json!({"status": "FAILED"}),
        json!({"type": "echo", "status": "NOPE"}),
        json!({"type": "a\u{0}b", "status": "FAILED"}),
        json!({"type": "echo", "status": "FAILED", "errorMessage": "a\u{0}b"}),
        json!({"type": "echo", "status": "FAILED", "after": "not-a-uuid"}),
        json!([]),
    ] {
        let answer = h.post_json("/api/dead-letters/retry", body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(!error_text(&answer).is_empty(), "{body}");
    }
    let form = h
        .send(
            Request::post("/api/dead-letters/retry")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("type=echo&status=FAILED"))
                .expect("request"),
        )
        .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let nothing = h
        .post_json(
            "/api/dead-letters/retry",
            json!({"type": "echo", "status": "FAILED", "errorMessage": null}),
        )
        .await;
    assert_eq!(nothing.status, StatusCode::OK, "{}", nothing.body);
    assert_eq!(
        nothing.body,
        json!({"retried": 0, "refused": {}, "remaining": false, "last": null})
    );
    h.assert_nothing_stored().await;
}
