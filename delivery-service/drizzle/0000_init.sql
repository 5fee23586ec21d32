-- Every id column compares exactly (utf8mb4_bin), set here by hand:
-- drizzle-kit does not model collations. Statuses, events and carrier names
-- are ASCII (ascii_bin), so an index on them serves `status = '...'` whatever
-- the connection's collation, and locked_by / carrier_lease, the tokens acks
-- are fenced on, compare exactly.
CREATE TABLE `shipment_event_outbox` (
	`id` bigint unsigned AUTO_INCREMENT NOT NULL,
	`message_key` varchar(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`order_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`shipment_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`event` varchar(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	`carrier` varchar(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	`reason` varchar(64),
	`occurred_at` datetime(3) NOT NULL,
	`status` varchar(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	`attempts` int NOT NULL DEFAULT 0,
	`next_attempt_at` datetime(3) NOT NULL,
	`locked_by` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	`last_error` varchar(1024),
	`created_at` datetime(3) NOT NULL,
	`delivered_at` datetime(3),
	`traceparent` varchar(55),
	CONSTRAINT `shipment_event_outbox_id` PRIMARY KEY(`id`),
	CONSTRAINT `shipment_event_outbox_message_key_uq` UNIQUE(`message_key`)
);
--> statement-breakpoint
CREATE TABLE `shipment_transitions` (
	`id` bigint unsigned AUTO_INCREMENT NOT NULL,
	`shipment_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`order_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`from_status` varchar(16) CHARACTER SET ascii COLLATE ascii_bin,
	`to_status` varchar(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	`at` datetime(3) NOT NULL,
	`source` varchar(96) NOT NULL,
	`detail` varchar(256),
	CONSTRAINT `shipment_transitions_id` PRIMARY KEY(`id`),
	CONSTRAINT `shipment_transitions_order_status_uq` UNIQUE(`order_id`,`to_status`)
);
--> statement-breakpoint
CREATE TABLE `shipments` (
	`id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`order_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`customer_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`total_cents` bigint NOT NULL,
	`currency` char(3) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	`carrier` varchar(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	`status` varchar(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	`tracking_number` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	`decline_reason` varchar(64),
	`created_at` datetime(3) NOT NULL,
	`updated_at` datetime(3) NOT NULL,
	`confirmed_at` datetime(3),
	`shipped_at` datetime(3),
	`delivered_at` datetime(3),
	`declined_at` datetime(3),
	`carrier_work` varchar(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	`carrier_attempts` int NOT NULL DEFAULT 0,
	`carrier_last_error` varchar(1024),
	`next_check_at` datetime(3),
	`carrier_lease` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	`traceparent` varchar(55),
	CONSTRAINT `shipments_id` PRIMARY KEY(`id`),
	CONSTRAINT `shipments_order_id_uq` UNIQUE(`order_id`)
);
--> statement-breakpoint
CREATE INDEX `shipment_event_outbox_claim_idx` ON `shipment_event_outbox` (`status`,`next_attempt_at`,`id`);--> statement-breakpoint
CREATE INDEX `shipment_event_outbox_delivered_idx` ON `shipment_event_outbox` (`status`,`delivered_at`,`id`);--> statement-breakpoint
CREATE INDEX `shipment_event_outbox_order_idx` ON `shipment_event_outbox` (`order_id`);--> statement-breakpoint
CREATE INDEX `shipments_status_updated_idx` ON `shipments` (`status`,`updated_at`,`order_id`);--> statement-breakpoint
CREATE INDEX `shipments_next_check_idx` ON `shipments` (`next_check_at`);