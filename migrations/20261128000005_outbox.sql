-- Transactional outbox (DESIGN.md §6, §7): a row is written in the same transaction as the change
-- it announces; a relay publishes unpublished rows with publisher confirms and stamps
-- `published_at`. The payload is JSON kept as text, which both MySQL and MariaDB store alike.

CREATE TABLE outbox (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    topic        VARCHAR(64)     NOT NULL,
    payload      TEXT            NOT NULL,
    created_at   DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    published_at DATETIME(3)     NULL,
    attempts     INT UNSIGNED    NOT NULL DEFAULT 0,
    last_error   VARCHAR(512)    NULL,
    PRIMARY KEY (id),
    -- The relay's scan: `WHERE published_at IS NULL ORDER BY id ... FOR UPDATE SKIP LOCKED`.
    KEY idx_outbox_unpublished (published_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
