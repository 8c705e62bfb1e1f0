-- An ended event's unsold units go back to the product's inventory, exactly once (issue 23):
-- `returned_stock` counts them (so the ledger still balances: total = available + live orders +
-- returned), `unsold_returned_at` marks the event done. The reconciler finds the events still to
-- do through the index.
ALTER TABLE spike_events
    ADD COLUMN returned_stock INT UNSIGNED NOT NULL DEFAULT 0 AFTER available_stock,
    ADD COLUMN unsold_returned_at DATETIME(3) NULL AFTER returned_stock,
    ADD KEY idx_spike_events_unsold (unsold_returned_at, end_at),
    ADD CONSTRAINT ck_spike_events_returned CHECK (available_stock + returned_stock <= total_stock);
