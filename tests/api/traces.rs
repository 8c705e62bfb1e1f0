//! Traces: one buyer's request, its Redis script, the publish, the worker's consume and the MySQL
//! transaction that makes the order share one trace, carried across RabbitMQ in the
//! `traceparent` header; a retry stays in it; the logs name it.
//!
//! The test binary exports the production spans to memory (helpers::logs). Only traces a test
//! starts are sampled, by sending a sampled `traceparent`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::SpanKind;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::SpanData;
use prost::Message;

use crate::helpers::{CapturedLogs, TestApp, TestOptions, spawn_app_with, traced_spans, wait_for};

/// A fresh sampled W3C trace context: (trace id, `traceparent` header value).
fn new_trace() -> (String, String) {
    let trace_id = format!("{:032x}", fastrand::u128(1..));
    let parent_id = format!("{:016x}", fastrand::u64(1..));
    let header = format!("00-{trace_id}-{parent_id}-01");
    (trace_id, header)
}

async fn buy_traced(app: &TestApp, token: &str, event: u64, traceparent: &str) -> u16 {
    app.client
        .post(app.url(&format!("/api/v1/spike/events/{event}/orders")))
        .bearer_auth(token)
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Whether `ancestor` is on `span`'s chain of parents within `spans`.
fn descends_from(spans: &[SpanData], span: &SpanData, ancestor: &SpanData) -> bool {
    let mut parent = span.parent_span_id;
    while let Some(next) = spans.iter().find(|s| s.span_context.span_id() == parent) {
        if next.span_context.span_id() == ancestor.span_context.span_id() {
            return true;
        }
        parent = next.parent_span_id;
    }
    false
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|span| span.name.to_string()).collect()
}

/// Waits until the trace holds spans named `expected` (each at least `times`), returns them all.
async fn wait_for_spans(trace_id: &str, expected: &[(&str, usize)]) -> Vec<SpanData> {
    let complete = || {
        let spans = traced_spans(trace_id);
        let names = names(&spans);
        expected
            .iter()
            .all(|(name, times)| names.iter().filter(|n| n == name).count() >= *times)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !complete() {
        assert!(
            std::time::Instant::now() < deadline,
            "trace {trace_id} lacks some of {expected:?}: has {:?}",
            names(&traced_spans(trace_id))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    traced_spans(trace_id)
}

#[tokio::test]
async fn a_buy_and_the_order_it_makes_share_one_trace_from_the_request_to_the_sql_transaction() {
    let (logs, _guard) = CapturedLogs::start(tracing::Level::INFO);
    let app = spawn_app_with(TestOptions::default().with_worker()).await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 1).await;
    let (_, token) = app.buyers(1).await.remove(0);
    let (trace_id, traceparent) = new_trace();

    assert_eq!(buy_traced(&app, &token, event, &traceparent).await, 202);
    app.wait_for_success(&token, event).await;

    let route = "POST /api/v1/spike/events/{id}/orders";
    let spans = wait_for_spans(
        &trace_id,
        &[
            (route, 1),
            ("redis.reserve", 1),
            ("flash_sale.publish_group", 1),
            ("publish spike.order.create", 1),
            ("consume spike.order.create", 1),
            ("mysql.tx create_flash_sale_orders", 1),
        ],
    )
    .await;
    let span = |name: &str| {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    // The chain of parents: the caller's span → the HTTP request → … → the transaction.
    let http = span(route);
    assert_eq!(http.span_kind, SpanKind::Server);
    assert_eq!(
        format!(
            "{:016x}",
            u64::from_be_bytes(http.parent_span_id.to_bytes())
        ),
        traceparent.split('-').nth(2).unwrap(),
        "the request continues the caller's trace"
    );
    let publish = span("publish spike.order.create");
    assert_eq!(publish.span_kind, SpanKind::Producer);
    let consume = span("consume spike.order.create");
    assert_eq!(consume.span_kind, SpanKind::Consumer);
    assert_eq!(
        consume.parent_span_id,
        publish.span_context.span_id(),
        "the consumer's parent is the publish, through the message's traceparent"
    );
    let transaction = span("mysql.tx create_flash_sale_orders");
    assert!(
        descends_from(&spans, transaction, consume),
        "the order's transaction runs inside the consume"
    );
    assert!(
        http.attributes
            .iter()
            .any(|kv| kv.key.as_str() == "http.response.status_code" && kv.value.as_str() == "202"),
        "{:?}",
        http.attributes
    );

    // The request's log lines carry the trace id next to the request id.
    let lines: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|line| line["message"] == "finished processing request")
        .filter(|line| line.to_string().contains(&trace_id))
        .collect();
    assert_eq!(lines.len(), 1, "{}", logs.text());
    let http_span = lines[0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|span| span["name"] == "http")
        .unwrap();
    assert_eq!(http_span["trace_id"], trace_id.as_str());
    assert!(http_span["request_id"].is_string());
}

#[tokio::test]
async fn a_retried_order_stays_in_its_buyers_trace() {
    // At `info`: the capture records the spans of that level, the consume span among them.
    let (logs, _guard) = CapturedLogs::start(tracing::Level::INFO);
    let app = spawn_app_with(
        TestOptions::default()
            .with_worker()
            .env("SPIKE_FLASH_SALE_RETRY_DELAYS", "300ms,300ms"),
    )
    .await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 1).await;
    let (buyer, token) = app.buyers(1).await.remove(0);
    // MySQL refuses the order until the first attempt has failed.
    app.refuse_orders_of(buyer).await;
    let (trace_id, traceparent) = new_trace();

    assert_eq!(buy_traced(&app, &token, event, &traceparent).await, 202);
    wait_for("the first attempt to fail", Duration::from_secs(10), || {
        let spans = traced_spans(&trace_id);
        async move {
            spans
                .iter()
                .any(|span| span.name == "publish spike.order.create.retry.1")
        }
    })
    .await;
    app.accept_orders_again().await;
    app.wait_for_success(&token, event).await;

    let spans = wait_for_spans(
        &trace_id,
        &[
            ("consume spike.order.create", 2),
            ("publish spike.order.create.retry.1", 1),
            ("mysql.tx create_flash_sale_orders", 2),
        ],
    )
    .await;
    let retry = spans
        .iter()
        .find(|span| span.name == "publish spike.order.create.retry.1")
        .unwrap();
    let second = spans.iter().find(|span| {
        span.name == "consume spike.order.create"
            && span.parent_span_id == retry.span_context.span_id()
    });
    assert!(
        second.is_some(),
        "the second attempt is the retry publish's child: {:?}",
        names(&spans)
    );

    // The worker's warning about the failed attempt names the buyer's trace.
    let failed: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|line| line["message"] == "creating a flash-sale order failed")
        .collect();
    assert!(!failed.is_empty(), "{}", logs.text());
    let consume = failed[0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|span| span["name"] == "amqp.consume")
        .expect("the consume span in the worker's log line");
    assert_eq!(consume["trace_id"], trace_id.as_str());
}

/// A stand-in OTLP/HTTP collector: answers every request 200 and keeps (request head, body).
async fn fake_collector() -> (u16, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut socket = BufReader::new(socket);
                loop {
                    let mut head = String::new();
                    let mut line = String::new();
                    while socket.read_line(&mut line).await.unwrap_or(0) > 2 {
                        head.push_str(&line);
                        line.clear();
                    }
                    if head.is_empty() {
                        return;
                    }
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|n| n.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    socket.read_exact(&mut body).await.unwrap();
                    store.lock().unwrap().push((head, body));
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    socket.get_mut().write_all(answer).await.unwrap();
                }
            });
        }
    });
    (port, received)
}

#[tokio::test]
async fn a_real_process_exports_sampled_spans_over_otlp_http_and_flushes_them_at_exit() {
    let (collector, received) = fake_collector().await;
    let resources = crate::helpers::TestResources::create().await;
    let port = crate::helpers::closed_port().await;
    let endpoint = format!("http://127.0.0.1:{collector}");
    // New traces are never sampled (ratio 0); a caller's sampled trace is (parent-based).
    let child = crate::process::Running::new(crate::process::spawn_spike_with(
        "all",
        &resources,
        port,
        &[
            ("SPIKE_OTLP_ENDPOINT", &endpoint),
            ("SPIKE_TRACE_SAMPLE_RATIO", "0"),
        ],
    ));
    let base = format!("http://127.0.0.1:{port}");
    crate::process::wait_until_healthy(&base).await;
    let (trace_id, traceparent) = new_trace();
    let answer = reqwest::Client::new()
        .get(format!("{base}/readyz"))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // SIGTERM: the exporter flushes what it holds before the process exits.
    assert!(child.terminate().await.success());
    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "the collector received spans");
    let mut spans = Vec::new();
    for (head, body) in &received {
        assert!(head.starts_with("POST /v1/traces "), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/x-protobuf"),
            "{head}"
        );
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    let trace_bytes = u128::from_str_radix(&trace_id, 16).unwrap().to_be_bytes();
    // Only the caller's trace was sampled: not the health checks before it, not the worker's
    // background passes.
    assert!(
        spans.iter().all(|span| span.trace_id == trace_bytes),
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert!(
        spans.iter().any(|span| span.name == "GET /readyz"),
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_request_its_caller_did_not_sample_leaves_no_span_anywhere() {
    let app = spawn_app_with(TestOptions::default().with_worker()).await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 1).await;
    let (_, token) = app.buyers(1).await.remove(0);
    let (trace_id, sampled) = new_trace();
    // The same context with the sampled flag off.
    let not_sampled = format!("{}-00", sampled.strip_suffix("-01").unwrap());

    assert_eq!(buy_traced(&app, &token, event, &not_sampled).await, 202);
    app.wait_for_success(&token, event).await;
    app.wait_until_settled(&admin, event).await;
    // Neither the request nor the worker recorded anything for it (the test exporter is
    // synchronous: a span is there the moment it ends).
    assert_eq!(names(&traced_spans(&trace_id)), Vec::<String>::new());
}
