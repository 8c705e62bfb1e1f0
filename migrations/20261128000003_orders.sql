-- Orders, their items and simulated payments (DESIGN.md §3, §7).

CREATE TABLE orders (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    user_id          BIGINT UNSIGNED NOT NULL,
    status           ENUM('pending_payment', 'paid', 'cancelled', 'closed') NOT NULL DEFAULT 'pending_payment',
    total_amount     DECIMAL(12, 2)  NOT NULL,
    kind             ENUM('regular', 'spike') NOT NULL DEFAULT 'regular',
    idempotency_key  VARCHAR(128) CHARACTER SET ascii NULL,
    -- SHA-256 of the request that created the order under `idempotency_key`: the same key with
    -- another body is refused (409/10009) instead of silently replaying the first order.
    request_hash     CHAR(64) CHARACTER SET ascii NULL,
    pay_deadline     DATETIME(3)     NOT NULL,
    created_at       DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    paid_at          DATETIME(3)     NULL,
    closed_at        DATETIME(3)     NULL,
    PRIMARY KEY (id),
    KEY idx_orders_user_created (user_id, created_at),
    UNIQUE KEY uk_orders_user_idempotency_key (user_id, idempotency_key),
    KEY idx_orders_status_deadline (status, pay_deadline),
    CONSTRAINT fk_orders_user FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT ck_orders_total CHECK (total_amount >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Price is captured at order time, so later price changes never alter an existing order.
CREATE TABLE order_items (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    order_id   BIGINT UNSIGNED NOT NULL,
    product_id BIGINT UNSIGNED NOT NULL,
    quantity   INT UNSIGNED    NOT NULL,
    price      DECIMAL(12, 2)  NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_order_items_order_product (order_id, product_id),
    KEY idx_order_items_product (product_id),
    CONSTRAINT fk_order_items_order FOREIGN KEY (order_id) REFERENCES orders (id),
    CONSTRAINT fk_order_items_product FOREIGN KEY (product_id) REFERENCES products (id),
    CONSTRAINT ck_order_items_quantity CHECK (quantity > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- One payment per order at most: paying twice finds the existing row (idempotent /pay).
CREATE TABLE payments (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    order_id   BIGINT UNSIGNED NOT NULL,
    amount     DECIMAL(12, 2)  NOT NULL,
    status     ENUM('succeeded', 'failed') NOT NULL DEFAULT 'succeeded',
    created_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY uk_payments_order (order_id),
    CONSTRAINT fk_payments_order FOREIGN KEY (order_id) REFERENCES orders (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
