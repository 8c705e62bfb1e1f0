//! The catalog: admin CRUD, listing with paging/sorting/filtering, validation, and the cache.

use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, code, envelope, spawn_app, wait_for};

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let response = app
        .send_authed(Method::POST, "/api/v1/products", token, Some(&body))
        .await;
    assert_eq!(response.status(), 201, "create {body}");
    envelope(response).await["data"].clone()
}

#[tokio::test]
async fn crud_round_trip() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let created = create(
        &app,
        &admin,
        json!({"title": " Phone X ", "description": "a phone", "price": "1999.9", "stock": 10}),
    )
    .await;
    assert_eq!(created["title"], "Phone X");
    assert_eq!(created["price"], "1999.90");
    assert_eq!(created["stock"], 10);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    let id = created["id"].as_u64().unwrap();
    let path = format!("/api/v1/products/{id}");

    let fetched = envelope(app.get(&path).await).await["data"].clone();
    assert_eq!(fetched, created);

    let patched = app
        .send_authed(
            Method::PATCH,
            &path,
            &admin,
            Some(&json!({"title": "Phone Y", "price": "1499.00", "stock": 3})),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let patched = envelope(patched).await["data"].clone();
    assert_eq!(patched["title"], "Phone Y");
    assert_eq!(patched["price"], "1499.00");
    assert_eq!(patched["stock"], 3);
    assert_eq!(patched["description"], "a phone", "untouched fields stay");
    // Readers see the change at once (the cached detail was invalidated).
    assert_eq!(envelope(app.get(&path).await).await["data"], patched);

    let deleted = app.send_authed(Method::DELETE, &path, &admin, None).await;
    assert_eq!(deleted.status(), 200);
    assert!(envelope(deleted).await["data"].is_null());

    for response in [
        app.get(&path).await,
        app.get(&format!("{path}/stock")).await,
        app.send_authed(
            Method::PATCH,
            &path,
            &admin,
            Some(&json!({"title": "again"})),
        )
        .await,
        app.send_authed(Method::DELETE, &path, &admin, None).await,
    ] {
        let (status, _, body) = code(response).await;
        assert_eq!((status, body["code"].as_u64()), (404, Some(30001)));
    }
    let list = envelope(app.get("/api/v1/products").await).await;
    assert_eq!(list["data"]["total"], 0);
    assert_eq!(list["data"]["items"], json!([]));
}

#[tokio::test]
async fn writes_need_an_admin() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = create(&app, &admin, json!({"title": "t", "price": "1.00"})).await;
    let path = format!("/api/v1/products/{}", product["id"]);
    let (user, _) = app.signed_in_user().await;
    let user = user["access_token"].as_str().unwrap();
    let body = json!({"title": "mine now", "price": "0.01"});
    for (method, path) in [
        (Method::POST, "/api/v1/products".to_owned()),
        (Method::PATCH, path.clone()),
        (Method::DELETE, path.clone()),
    ] {
        let response = app
            .send_authed(method.clone(), &path, user, Some(&body))
            .await;
        let (status, _, body) = code(response).await;
        assert_eq!(
            (status, body["code"].as_u64()),
            (403, Some(10003)),
            "{method} {path}"
        );
        let anonymous = app
            .client
            .request(method, app.url(&path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);
    }
    // Nothing changed.
    assert_eq!(envelope(app.get(&path).await).await["data"]["title"], "t");
}

#[tokio::test]
async fn invalid_product_fields_are_named() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let cases = [
        (json!({"title": "t", "price": "-1.00"}), "price"),
        (json!({"title": "t", "price": "1.001"}), "price"),
        (json!({"title": "t", "price": 12.5}), "price"),
        (json!({"title": "t", "price": "abc"}), "price"),
        (json!({"title": "t"}), "price"),
        (json!({"price": "1.00"}), "title"),
        (json!({"title": "   ", "price": "1.00"}), "title"),
        (json!({"title": 5, "price": "1.00"}), "title"),
        (json!({"title": "t", "price": "1.00", "stock": -1}), "stock"),
        (
            json!({"title": "t", "price": "1.00", "stock": "5"}),
            "stock",
        ),
        (
            json!({"title": "t", "price": "1.00", "stock": 1.5}),
            "stock",
        ),
        // Careless input is refused, not guessed at.
        (json!({"title": "t", "price": " 1.00"}), "price"),
        (json!({"title": "t", "price": "1.00 "}), "price"),
        (json!({"title": "t\u{0}x", "price": "1.00"}), "title"),
        (json!({"title": "t\nx", "price": "1.00"}), "title"),
        (
            json!({"title": "t", "price": "1.00", "description": "a\u{0}b"}),
            "description",
        ),
        (
            json!({"title": "t", "price": "1.00", "stock": null}),
            "stock",
        ),
        (json!({"title": null, "price": "1.00"}), "title"),
    ];
    for (body, field) in cases {
        let response = app
            .send_authed(Method::POST, "/api/v1/products", &admin, Some(&body))
            .await;
        let (status, _, error) = code(response).await;
        assert_eq!(
            (status, error["code"].as_u64()),
            (400, Some(10001)),
            "{body}"
        );
        assert!(
            error["data"]["fields"][field].is_string(),
            "{field} named for {body}: {error}"
        );
    }
    let product = create(&app, &admin, json!({"title": "t", "price": "1.00"})).await;
    let path = format!("/api/v1/products/{}", product["id"]);
    let response = app
        .send_authed(Method::PATCH, &path, &admin, Some(&json!({"price": "-5"})))
        .await;
    let (status, _, error) = code(response).await;
    assert_eq!(status, 400);
    assert!(error["data"]["fields"]["price"].is_string());
    let (status, _, error) = code(app.get("/api/v1/products/abc").await).await;
    assert_eq!((status, error["code"].as_u64()), (400, Some(10001)));
    // A PATCH naming nothing it can change is a client's mistake (`titel`), not a no-op 200.
    for body in [json!({}), json!({"titel": "typo"})] {
        let response = app
            .send_authed(Method::PATCH, &path, &admin, Some(&body))
            .await;
        let (status, code_, error) = code(response).await;
        assert_eq!((status, code_), (400, Some(10001)), "{body}: {error}");
    }
    // An id is spelt one way: `01` and `+1` are not `1`.
    let id = product["id"].as_u64().unwrap();
    for spelling in [
        format!("0{id}"),
        format!("+{id}"),
        "0".into(),
        format!("{id}.0"),
    ] {
        let (status, code_, _) = code(app.get(&format!("/api/v1/products/{spelling}")).await).await;
        assert_eq!((status, code_), (400, Some(10001)), "{spelling}");
    }
    assert_eq!(
        app.get(&format!("/api/v1/products/{id}")).await.status(),
        200
    );
}

#[tokio::test]
async fn invalid_list_parameters_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    let cases = [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("sort=popularity", "sort"),
        ("sort=price,sideways", "sort"),
        ("min_price=-1", "min_price"),
        ("max_price=1.234", "max_price"),
        ("min_price=abc", "min_price"),
        ("min_price=10.00&max_price=5.00", "min_price"),
    ];
    for (query, field) in cases {
        let response = app.get(&format!("/api/v1/products?{query}")).await;
        let (status, _, error) = code(response).await;
        assert_eq!(
            (status, error["code"].as_u64()),
            (400, Some(10001)),
            "{query}"
        );
        assert!(
            error["data"]["fields"][field].is_string(),
            "{query}: {error}"
        );
    }
    let duplicate = app.get("/api/v1/products?page=1&page=2").await;
    assert_eq!(duplicate.status(), 400);
    // A parameter a list does not take (a `sort` where there is none, a misspelling) is a 400
    // too, not silently ignored.
    let (_, user) = app.buyers(1).await.remove(0);
    for path in [
        "/api/v1/products?pagesize=5",
        "/api/v1/spike/events?sort=start_at,desc",
    ] {
        let (status, code_, error) = code(app.get(path).await).await;
        assert_eq!((status, code_), (400, Some(10001)), "{path}: {error}");
    }
    let (status, code_, _) = code(
        app.get_authed("/api/v1/orders?sort=created_at,desc", &user)
            .await,
    )
    .await;
    assert_eq!((status, code_), (400, Some(10001)));
}

#[tokio::test]
async fn listing_pages_sorts_and_filters() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for (title, price) in [
        ("Apple phone", "9.00"),
        ("Banana phone", "3.00"),
        ("Cherry tablet", "7.50"),
        ("Durian 100% fruit", "1.00"),
        ("Elder_phone", "5.00"),
    ] {
        create(
            &app,
            &admin,
            json!({"title": title, "price": price, "stock": 1}),
        )
        .await;
    }
    let titles = |page: &Value| -> Vec<String> {
        page["data"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let get = |query: &str| {
        let url = format!("/api/v1/products?{query}");
        let app = &app;
        async move { envelope(app.get(&url).await).await }
    };

    let by_price = get("sort=price,asc").await;
    assert_eq!(
        titles(&by_price),
        [
            "Durian 100% fruit",
            "Banana phone",
            "Elder_phone",
            "Cherry tablet",
            "Apple phone"
        ]
    );
    assert_eq!(by_price["data"]["total"], 5);
    assert_eq!(by_price["data"]["page"], 1);
    assert_eq!(by_price["data"]["page_size"], 20);

    let page_two = get("sort=price,desc&page=2&page_size=2").await;
    assert_eq!(titles(&page_two), ["Elder_phone", "Banana phone"]);
    assert_eq!(page_two["data"]["total"], 5);
    assert_eq!(page_two["data"]["page_size"], 2);
    let beyond = get("page=9&page_size=2").await;
    assert_eq!(titles(&beyond), Vec::<String>::new());
    assert_eq!(beyond["data"]["total"], 5);

    assert_eq!(
        titles(&get("sort=title,desc&page_size=1").await),
        ["Elder_phone"]
    );
    // Newest first by default.
    assert_eq!(titles(&get("page_size=1").await), ["Elder_phone"]);

    let phones = get("q=PHONE&sort=title").await;
    assert_eq!(
        titles(&phones),
        ["Apple phone", "Banana phone", "Elder_phone"]
    );
    assert_eq!(phones["data"]["total"], 3);
    // LIKE wildcards in q match literally.
    assert_eq!(titles(&get("q=100%25").await), ["Durian 100% fruit"]);
    assert_eq!(titles(&get("q=r_p").await), ["Elder_phone"]);

    let mid = get("min_price=3.00&max_price=7.50&sort=price").await;
    assert_eq!(
        titles(&mid),
        ["Banana phone", "Elder_phone", "Cherry tablet"]
    );
    assert_eq!(mid["data"]["total"], 3);
}

#[tokio::test]
async fn product_detail_is_cached_and_invalidated() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = create(
        &app,
        &admin,
        json!({"title": "cached", "price": "2.00", "stock": 4}),
    )
    .await;
    let id = product["id"].as_u64().unwrap();
    let path = format!("/api/v1/products/{id}");
    let key = format!("{}product:{id}", app.config.redis.prefix);
    let stats = app.state.catalog.cache_stats();
    let mut redis = app.infra.redis.clone();

    assert_eq!(app.get(&path).await.status(), 200);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(exists, "first read fills the cache");
    let loads = stats.loads.load(Ordering::SeqCst);
    let hits = stats.hits.load(Ordering::SeqCst);
    assert_eq!(app.get(&path).await.status(), 200);
    assert_eq!(
        stats.loads.load(Ordering::SeqCst),
        loads,
        "second read does not reach MySQL"
    );
    assert_eq!(stats.hits.load(Ordering::SeqCst), hits + 1);

    let response = app
        .send_authed(
            Method::PATCH,
            &path,
            &admin,
            Some(&json!({"price": "2.50"})),
        )
        .await;
    assert_eq!(response.status(), 200);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!exists, "update deletes the cached entry");
    assert_eq!(
        envelope(app.get(&path).await).await["data"]["price"],
        "2.50"
    );

    // A missing id is remembered as an empty marker with a TTL.
    let missing_key = format!("{}product:999999", app.config.redis.prefix);
    let (status, _, body) = code(app.get("/api/v1/products/999999").await).await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(30001)));
    let marker: Option<String> = redis::cmd("GET")
        .arg(&missing_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(marker.as_deref(), Some(""));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&missing_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 30_000, "marker TTL {ttl} ms");
    let loads = stats.loads.load(Ordering::SeqCst);
    assert_eq!(app.get("/api/v1/products/999999").await.status(), 404);
    assert_eq!(
        stats.loads.load(Ordering::SeqCst),
        loads,
        "marker answers without MySQL"
    );

    // The product TTL carries jitter around 60 s.
    let _ = app.get(&path).await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((50_000..=66_000).contains(&ttl), "product TTL {ttl} ms");
}

#[tokio::test]
async fn fifty_concurrent_reads_of_a_cold_key_make_one_mysql_read() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = create(
        &app,
        &admin,
        json!({"title": "hot", "price": "9.99", "stock": 1}),
    )
    .await;
    let path = format!("/api/v1/products/{}", product["id"]);
    // Let the create's delayed second invalidation pass, then make sure the key is cold.
    let stats = app.state.catalog.cache_stats();
    wait_for(
        "the delayed invalidation",
        std::time::Duration::from_secs(5),
        || async { stats.pending_invalidations.load(Ordering::SeqCst) == 0 },
    )
    .await;
    let key = format!("{}product:{}", app.config.redis.prefix, product["id"]);
    let mut redis = app.infra.redis.clone();
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let loads_before = app.state.catalog.cache_stats().loads.load(Ordering::SeqCst);

    let reads = (0..50).map(|_| app.get(&path));
    let responses = futures_util::future::join_all(reads).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    let loads = app.state.catalog.cache_stats().loads.load(Ordering::SeqCst) - loads_before;
    assert_eq!(loads, 1, "MySQL reads for 50 concurrent cold reads");
}

#[tokio::test]
async fn stock_endpoint_reflects_inventory_changes() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = create(
        &app,
        &admin,
        json!({"title": "s", "price": "1.00", "stock": 5}),
    )
    .await;
    let id = product["id"].as_u64().unwrap();
    let path = format!("/api/v1/products/{id}/stock");
    assert_eq!(
        envelope(app.get(&path).await).await["data"],
        json!({"product_id": id, "stock": 5})
    );

    app.send_authed(
        Method::PATCH,
        &format!("/api/v1/products/{id}"),
        &admin,
        Some(&json!({"stock": 8})),
    )
    .await;
    assert_eq!(envelope(app.get(&path).await).await["data"]["stock"], 8);

    // A change made by another part of the system (an order) shows at once: no cache here.
    sqlx::query("UPDATE inventory SET stock = stock - 3 WHERE product_id = ?")
        .bind(id)
        .execute(&app.infra.db)
        .await
        .unwrap();
    assert_eq!(envelope(app.get(&path).await).await["data"]["stock"], 5);
}

#[tokio::test]
async fn product_routes_are_documented() {
    let app = spawn_app().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let products = &doc["paths"]["/api/v1/products"];
    assert!(products["get"].is_object() && products["post"].is_object());
    let one = &doc["paths"]["/api/v1/products/{id}"];
    assert!(one["get"].is_object() && one["patch"].is_object() && one["delete"].is_object());
    assert!(doc["paths"]["/api/v1/products/{id}/stock"]["get"].is_object());
    let params: Vec<&str> = products["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        ["page", "page_size", "sort", "q", "min_price", "max_price"]
    );
}
