//! The HTTP ceiling of this machine: a bare axum server answering `GET /healthz` with the same
//! body as spike's, and nothing else (no middleware, no logging). `scripts/bench.sh` divides
//! spike's `/healthz` by it, and measures the load tool's own ceiling against it.
//!
//! `cargo run --release --example hello -- 127.0.0.1:18081`

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_owned());
    let app = Router::new().route(
        "/healthz",
        get(|| async { ([("content-type", "application/json")], r#"{"status":"ok"}"#) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("hello listening on {addr}");
    axum::serve(listener, app).await
}
