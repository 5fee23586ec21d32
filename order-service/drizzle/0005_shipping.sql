-- Shipping. Ids, keys and the carrier compare exactly (utf8mb4_bin, written out although the database default is
-- binary since 0003); statuses and the decline reason are ASCII like every engine table's status (see 0004): with a
-- collation other than the connection's, MariaDB filesorts the claim instead of reading its index. Orders that exist
-- get shipping_status NONE: shipped by hand, as before.
CREATE TABLE `shipment_outbox` (
	`id` bigint unsigned AUTO_INCREMENT NOT NULL,
	`message_key` varchar(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`order_id` varchar(26) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`customer_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`total_cents` bigint NOT NULL,
	`currency` char(3) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`carrier` varchar(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
	`status` varchar(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	`attempts` int NOT NULL DEFAULT 0,
	`next_attempt_at` datetime(3) NOT NULL,
	`locked_by` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	`last_error` varchar(1024),
	`created_at` datetime(3) NOT NULL,
	`delivered_at` datetime(3),
	`traceparent` varchar(55),
	CONSTRAINT `shipment_outbox_id` PRIMARY KEY(`id`),
	CONSTRAINT `shipment_outbox_message_key_uq` UNIQUE(`message_key`),
	CONSTRAINT `shipment_outbox_order_id_uq` UNIQUE(`order_id`)
);
--> statement-breakpoint
ALTER TABLE `orders` ADD `shipping_status` varchar(16) CHARACTER SET ascii COLLATE ascii_bin DEFAULT 'NONE' NOT NULL;--> statement-breakpoint
ALTER TABLE `orders` ADD `carrier` varchar(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;--> statement-breakpoint
ALTER TABLE `orders` ADD `shipping_requested_at` datetime(3);--> statement-breakpoint
ALTER TABLE `orders` ADD `shipping_decline_reason` varchar(64) CHARACTER SET ascii COLLATE ascii_bin;--> statement-breakpoint
ALTER TABLE `orders` ADD `sent_by` varchar(16) CHARACTER SET ascii COLLATE ascii_bin;--> statement-breakpoint
CREATE INDEX `shipment_outbox_claim_idx` ON `shipment_outbox` (`status`,`next_attempt_at`,`id`);--> statement-breakpoint
CREATE INDEX `shipment_outbox_delivered_idx` ON `shipment_outbox` (`status`,`delivered_at`,`id`);--> statement-breakpoint
CREATE INDEX `orders_shipping_status_idx` ON `orders` (`shipping_status`,`shipping_requested_at`,`id`);