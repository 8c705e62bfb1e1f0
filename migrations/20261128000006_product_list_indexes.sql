-- The product list always filters on status = 'active' and sorts by price, created_at or title
-- (with id as the tie-breaker). (status, price) exists; these serve the other two sorts with an
-- index scan in order instead of a filesort. See docs/catalog.md for the EXPLAIN output.
CREATE INDEX idx_products_status_created ON products (status, created_at, id);
CREATE INDEX idx_products_status_title ON products (status, title, id);
