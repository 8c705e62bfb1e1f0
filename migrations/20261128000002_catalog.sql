-- Products and their inventory (DESIGN.md §3).

CREATE TABLE products (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    title       VARCHAR(200)    NOT NULL,
    description TEXT            NOT NULL,
    price       DECIMAL(12, 2)  NOT NULL,
    status      ENUM('active', 'deleted') NOT NULL DEFAULT 'active',
    created_at  DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at  DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    KEY idx_products_status_price (status, price),
    KEY idx_products_created_at (created_at),
    CONSTRAINT ck_products_price CHECK (price >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Sellable units of a product. UNSIGNED makes a negative stock impossible even if a conditional
-- decrement (`... WHERE stock >= ?`) were ever forgotten: the UPDATE fails instead.
CREATE TABLE inventory (
    product_id BIGINT UNSIGNED NOT NULL,
    stock      INT UNSIGNED    NOT NULL DEFAULT 0,
    version    INT UNSIGNED    NOT NULL DEFAULT 0,
    updated_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (product_id),
    CONSTRAINT fk_inventory_product FOREIGN KEY (product_id) REFERENCES products (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
