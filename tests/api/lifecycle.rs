//! Process lifecycle: topology declared at start-up, graceful shutdown, and test isolation
//! (each test's database, Redis keys and queues are gone after it).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use spike::api::AppState;
use spike::api::response::ApiResponse;
use sqlx::Row;

use crate::helpers::{TestOptions, spawn_app, spawn_app_with};

async fn queue_exists(amqp_url: &str, queue: &str) -> bool {
    let connection = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    // A passive declare fails (and closes the channel) when the queue does not exist.
    let channel = connection.create_channel().await.unwrap();
    let exists = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok();
    connection.close(200, "done".into()).await.ok();
    exists
}

#[tokio::test]
async fn start_up_declares_every_queue_and_drop_removes_everything() {
    // The production default: quorum queues.
    let app = spawn_app_with(TestOptions::default().env("SPIKE_AMQP_QUEUE_TYPE", "quorum")).await;
    let amqp_url = app.config.amqp.url.expose().to_owned();
    let queues = app.topology().queue_names();
    assert_eq!(queues.len(), 7);
    for queue in &queues {
        assert!(queue.starts_with(&app.config.amqp.prefix), "{queue}");
        assert!(queue_exists(&amqp_url, queue).await, "{queue} declared");
    }
    let mut redis = app.infra.redis.clone();
    let key = format!("{}probe", app.config.redis.prefix);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("1")
        .query_async(&mut redis)
        .await
        .unwrap();
    let database = app.database_name().to_owned();
    // The app's own connections are closed by the cleanup; look from outside.
    let outside =
        crate::helpers::with_database(app.config.database.url.expose(), "information_schema");

    drop(app);

    let pool = sqlx::MySqlPool::connect(&outside).await.unwrap();
    let remaining: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = ?")
            .bind(&database)
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("n");
    assert_eq!(remaining, 0, "test database dropped");
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!exists, "test keys deleted");
    for queue in &queues {
        assert!(!queue_exists(&amqp_url, queue).await, "{queue} deleted");
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let started = Arc::new(tokio::sync::Notify::new());
    let slow: Router<AppState> = Router::new().route(
        "/api/v1/_probe/slow",
        get({
            let started = started.clone();
            || async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(800)).await;
                ApiResponse::ok("finished")
            }
        }),
    );
    let mut app = spawn_app_with(TestOptions::default().routes(slow)).await;

    let in_flight = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/api/v1/_probe/slow");
        async move { client.get(url).send().await }
    });
    started.notified().await;
    app.shutdown.cancel();

    let response = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"], "finished");

    let server = app.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops after draining")
        .unwrap();
    let refused = app.client.get(app.url("/healthz")).send().await;
    assert!(
        refused.is_err(),
        "new connections are refused after shutdown"
    );
}

#[tokio::test]
async fn migrations_are_recorded_and_idempotent() {
    let app = spawn_app().await;
    // Start-up already migrated; running again changes nothing.
    spike::repo::mysql::migrate(&app.infra.db)
        .await
        .expect("second run is a no-op");
    let applied: i64 = sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations WHERE success = 1")
        .fetch_one(&app.infra.db)
        .await
        .unwrap()
        .get("n");
    assert_eq!(
        applied as usize,
        spike::repo::mysql::MIGRATOR.iter().count()
    );
}
