-- Paid orders. Ids and keys compare exactly (utf8mb4_bin, written out although the database default is
-- binary since 0003); the outboxes' status is ASCII like every engine table (see @shop/engine outboxTableDdl):
-- with a collation other than the connection's, MariaDB filesorts the claim instead of reading its index.
CREATE TABLE `charge_outbox` (
	`id` bigint unsigned AUTO_INCREMENT NOT NULL,
	`order_id` varchar(26) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`customer_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`amount_cents` bigint NOT NULL,
	`currency` char(3) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`status` varchar(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	`attempts` int NOT NULL DEFAULT 0,
	`next_attempt_at` datetime(3) NOT NULL,
	`locked_by` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	`last_error` varchar(1024),
	`created_at` datetime(3) NOT NULL,
	`delivered_at` datetime(3),
	`traceparent` varchar(55),
	CONSTRAINT `charge_outbox_id` PRIMARY KEY(`id`),
	CONSTRAINT `charge_outbox_order_id_uq` UNIQUE(`order_id`)
);
--> statement-breakpoint
CREATE TABLE `inbox` (
	`message_key` varchar(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`facts` text CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`outcome` text CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	`received_at` datetime(3) NOT NULL,
	CONSTRAINT `inbox_message_key` PRIMARY KEY(`message_key`)
);
--> statement-breakpoint
CREATE TABLE `refund_outbox` (
	`id` bigint unsigned AUTO_INCREMENT NOT NULL,
	`order_id` varchar(26) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`amount_cents` bigint NOT NULL,
	`currency` char(3) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`status` varchar(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	`attempts` int NOT NULL DEFAULT 0,
	`next_attempt_at` datetime(3) NOT NULL,
	`locked_by` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	`last_error` varchar(1024),
	`created_at` datetime(3) NOT NULL,
	`delivered_at` datetime(3),
	`traceparent` varchar(55),
	CONSTRAINT `refund_outbox_id` PRIMARY KEY(`id`),
	CONSTRAINT `refund_outbox_order_id_uq` UNIQUE(`order_id`)
);
--> statement-breakpoint
ALTER TABLE `orders` ADD `payment_method` varchar(16) CHARACTER SET ascii COLLATE ascii_bin DEFAULT 'NONE' NOT NULL;--> statement-breakpoint
ALTER TABLE `orders` ADD `payment_status` varchar(16) CHARACTER SET ascii COLLATE ascii_bin DEFAULT 'NONE' NOT NULL;--> statement-breakpoint
ALTER TABLE `orders` ADD `payment_reason` varchar(32) CHARACTER SET ascii COLLATE ascii_bin;--> statement-breakpoint
ALTER TABLE `orders` ADD `charged_at` datetime(3);--> statement-breakpoint
ALTER TABLE `orders` ADD `refunded_at` datetime(3);--> statement-breakpoint
CREATE INDEX `charge_outbox_claim_idx` ON `charge_outbox` (`status`,`next_attempt_at`,`id`);--> statement-breakpoint
CREATE INDEX `charge_outbox_delivered_idx` ON `charge_outbox` (`status`,`delivered_at`,`id`);--> statement-breakpoint
CREATE INDEX `refund_outbox_claim_idx` ON `refund_outbox` (`status`,`next_attempt_at`,`id`);--> statement-breakpoint
CREATE INDEX `refund_outbox_delivered_idx` ON `refund_outbox` (`status`,`delivered_at`,`id`);--> statement-breakpoint
CREATE INDEX `orders_payment_status_idx` ON `orders` (`payment_status`,`created_at`,`id`);