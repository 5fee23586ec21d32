-- The charges in the order ListOrderPayments lists them: charge_decided_at is
-- received_at for "charge:" keys and NULL for every other message, so the
-- index holds the charges alone, by (decided_at, "charge:" + order id).
ALTER TABLE `inbox` ADD `charge_decided_at` datetime(3) GENERATED ALWAYS AS (CASE WHEN `message_key` LIKE 'charge:%' THEN `received_at` END) STORED;--> statement-breakpoint
CREATE INDEX `inbox_charge_decided_idx` ON `inbox` (`charge_decided_at`,`message_key`);--> statement-breakpoint
-- By hand (drizzle-kit does not model character sets): payment_outbox as the
-- engine's outboxTableDdl makes an outbox. status is ASCII, so the claim's
-- `status = 'pending'` is a constant of its ORDER BY and the claim index
-- serves it whatever the connection's collation; locked_by, the claim token
-- acks are fenced on, compares exactly.
ALTER TABLE `payment_outbox` MODIFY `status` varchar(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, MODIFY `locked_by` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
