-- Flash-sale events and the orders they produced (DESIGN.md §3, §5).

-- `total_stock` is allotted out of the product's inventory when the event is created;
-- `available_stock` is what MySQL still lets the worker sell (decremented per created order,
-- incremented when an unpaid order closes). `status` is the administrative state; upcoming /
-- active / ended are derived from start_at and end_at at read time.
CREATE TABLE spike_events (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    product_id      BIGINT UNSIGNED NOT NULL,
    title           VARCHAR(200)    NOT NULL,
    spike_price     DECIMAL(12, 2)  NOT NULL,
    total_stock     INT UNSIGNED    NOT NULL,
    available_stock INT UNSIGNED    NOT NULL,
    per_user_limit  INT UNSIGNED    NOT NULL DEFAULT 1,
    start_at        DATETIME(3)     NOT NULL,
    end_at          DATETIME(3)     NOT NULL,
    status          ENUM('scheduled', 'cancelled') NOT NULL DEFAULT 'scheduled',
    created_at      DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at      DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    KEY idx_spike_events_product_window (product_id, start_at, end_at),
    KEY idx_spike_events_start (start_at),
    CONSTRAINT fk_spike_events_product FOREIGN KEY (product_id) REFERENCES products (id),
    CONSTRAINT ck_spike_events_stock CHECK (available_stock <= total_stock),
    CONSTRAINT ck_spike_events_window CHECK (end_at > start_at),
    CONSTRAINT ck_spike_events_price CHECK (spike_price >= 0),
    CONSTRAINT ck_spike_events_limit CHECK (per_user_limit >= 1)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The unique (user_id, spike_event_id) key is invariant 2 of DESIGN.md §1 ("one per buyer"):
-- a redelivered or duplicated order-creation message hits it and becomes a no-op.
CREATE TABLE spike_orders (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    spike_event_id BIGINT UNSIGNED NOT NULL,
    user_id        BIGINT UNSIGNED NOT NULL,
    order_id       BIGINT UNSIGNED NOT NULL,
    ticket         VARCHAR(64) CHARACTER SET ascii NOT NULL,
    created_at     DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY uk_spike_orders_user_event (user_id, spike_event_id),
    UNIQUE KEY uk_spike_orders_ticket (ticket),
    UNIQUE KEY uk_spike_orders_order (order_id),
    KEY idx_spike_orders_event (spike_event_id),
    CONSTRAINT fk_spike_orders_event FOREIGN KEY (spike_event_id) REFERENCES spike_events (id),
    CONSTRAINT fk_spike_orders_user FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT fk_spike_orders_order FOREIGN KEY (order_id) REFERENCES orders (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
