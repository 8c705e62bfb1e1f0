//! In-process costs on the buy path, without the network or the stores: verifying the access
//! token, the per-buyer limiter, the sold-out flag, and serializing the envelopes the buy
//! endpoint answers with. `cargo bench` prints time per call; docs/benchmarks.md has figures.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use spike::api::error::ErrorEnvelope;
use spike::api::flash_sale::AcceptedView;
use spike::api::response::Envelope;
use spike::config::RateLimit;
use spike::domain::user::{Role, User};
use spike::service::auth::tokens::AccessTokens;
use spike::service::flash_sale::sold_out::SoldOutFlags;
use spike::service::flash_sale::user_limit::UserRateLimiter;

fn jwt(c: &mut Criterion) {
    let tokens = AccessTokens::new(&[7u8; 32], Duration::from_secs(900)).expect("token keys");
    let user = User {
        id: 42,
        email: "buyer@example.com".into(),
        role: Role::User,
    };
    let token = tokens
        .issue(&user, uuid::Uuid::from_u128(1))
        .expect("token");
    c.bench_function("jwt_verify", |b| {
        b.iter(|| tokens.verify(black_box(&token)).expect("valid token"))
    });
}

fn user_limiter(c: &mut Criterion) {
    // Generous enough that every take succeeds: the cost of the allowed path.
    let limiter = UserRateLimiter::new(RateLimit {
        burst: u32::MAX,
        per: Duration::from_secs(1),
    });
    let mut user = 0u64;
    c.bench_function("user_limiter_take_10k_buyers", |b| {
        b.iter(|| {
            user = (user + 1) % 10_000;
            limiter.take(black_box(user))
        })
    });
}

fn sold_out_flag(c: &mut Criterion) {
    let flags = SoldOutFlags::default();
    flags.mark(7);
    c.bench_function("sold_out_flag_hit", |b| {
        b.iter(|| flags.is_sold_out(black_box(7)))
    });
    c.bench_function("sold_out_flag_miss", |b| {
        b.iter(|| flags.is_sold_out(black_box(8)))
    });
}

fn envelopes(c: &mut Criterion) {
    c.bench_function("envelope_202_queued", |b| {
        b.iter(|| {
            let body = Envelope {
                code: 0,
                message: "OK".to_owned(),
                data: AcceptedView {
                    status: "queued",
                    ticket: "5f0c2b1e9d8a4c7b8e6f5a4b3c2d1e0f".to_owned(),
                    position: None,
                },
                request_id: "0b7e4c2a-1f3d-4e5b-9a8c-7d6e5f4a3b2c".to_owned(),
            };
            serde_json::to_vec(black_box(&body)).expect("serializable")
        })
    });
    c.bench_function("envelope_409_sold_out", |b| {
        b.iter(|| {
            let body = ErrorEnvelope {
                code: 50004,
                message: "sold out".to_owned(),
                data: None,
                request_id: "0b7e4c2a-1f3d-4e5b-9a8c-7d6e5f4a3b2c".to_owned(),
            };
            serde_json::to_vec(black_box(&body)).expect("serializable")
        })
    });
}

criterion_group!(hot_paths, jwt, user_limiter, sold_out_flag, envelopes);
criterion_main!(hot_paths);
