-- A flash-sale order carries the ticket of the reservation it was made from, so the worker can
-- write a whole batch of orders with one multi-row INSERT and read their ids back by ticket.
-- LAST_INSERT_ID() + n would not do: under innodb_autoinc_lock_mode = 2 (MySQL 8's default) the
-- ids of one multi-row insert need not be consecutive. Regular orders leave it NULL (a unique key
-- allows any number of NULLs). Backfilled from spike_orders for orders made before 0.3.
ALTER TABLE orders
    ADD COLUMN ticket VARCHAR(64) CHARACTER SET ascii NULL AFTER idempotency_key,
    ADD UNIQUE KEY uk_orders_ticket (ticket);

UPDATE orders o JOIN spike_orders s ON s.order_id = o.id SET o.ticket = s.ticket;
