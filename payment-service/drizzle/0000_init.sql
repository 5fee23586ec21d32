-- Every id column compares exactly (utf8mb4_bin), set here by hand: drizzle-kit
-- does not model collations. inbox.facts and outcome too: a replay's facts
-- must equal the recorded ones byte for byte.
CREATE TABLE `accounts` (
	`id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`customer_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	`kind` varchar(16) NOT NULL,
	`currency` char(3) NOT NULL,
	`balance_cents` bigint NOT NULL DEFAULT 0,
	`opened_at` datetime(3) NOT NULL,
	CONSTRAINT `accounts_id` PRIMARY KEY(`id`),
	CONSTRAINT `accounts_customer_id_uq` UNIQUE(`customer_id`),
	CONSTRAINT `accounts_balance_not_negative` CHECK(`balance_cents` >= 0)
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
CREATE TABLE `ledger_entries` (
	`id` varchar(26) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`movement_id` varchar(26) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`account_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`kind` varchar(16) NOT NULL,
	`amount_cents` bigint NOT NULL,
	`currency` char(3) NOT NULL,
	`order_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	`request_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	`created_at` datetime(3) NOT NULL,
	`debit_order_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin GENERATED ALWAYS AS (CASE WHEN `kind` = 'CHARGE' AND `amount_cents` < 0 THEN `order_id` END) STORED,
	`refund_order_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin GENERATED ALWAYS AS (CASE WHEN `kind` = 'REFUND' AND `amount_cents` > 0 THEN `order_id` END) STORED,
	CONSTRAINT `ledger_entries_id` PRIMARY KEY(`id`),
	CONSTRAINT `ledger_entries_movement_account_uq` UNIQUE(`movement_id`,`account_id`),
	CONSTRAINT `ledger_entries_debit_order_uq` UNIQUE(`debit_order_id`),
	CONSTRAINT `ledger_entries_refund_order_uq` UNIQUE(`refund_order_id`)
);
--> statement-breakpoint
CREATE TABLE `payment_outbox` (
	`id` bigint unsigned AUTO_INCREMENT NOT NULL,
	`message_key` varchar(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`order_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`customer_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	`outcome` varchar(16) NOT NULL,
	`reason` varchar(32),
	`amount_cents` bigint NOT NULL,
	`currency` char(3) NOT NULL,
	`status` varchar(16) NOT NULL,
	`attempts` int NOT NULL DEFAULT 0,
	`next_attempt_at` datetime(3) NOT NULL,
	`locked_by` varchar(64),
	`last_error` varchar(1024),
	`created_at` datetime(3) NOT NULL,
	`delivered_at` datetime(3),
	`traceparent` varchar(55),
	CONSTRAINT `payment_outbox_id` PRIMARY KEY(`id`),
	CONSTRAINT `payment_outbox_message_key_uq` UNIQUE(`message_key`)
);
--> statement-breakpoint
CREATE INDEX `ledger_entries_account_idx` ON `ledger_entries` (`account_id`,`id`);--> statement-breakpoint
CREATE INDEX `ledger_entries_order_idx` ON `ledger_entries` (`order_id`);--> statement-breakpoint
CREATE INDEX `payment_outbox_claim_idx` ON `payment_outbox` (`status`,`next_attempt_at`,`id`);--> statement-breakpoint
CREATE INDEX `payment_outbox_delivered_idx` ON `payment_outbox` (`status`,`delivered_at`,`id`);--> statement-breakpoint
CREATE INDEX `payment_outbox_order_idx` ON `payment_outbox` (`order_id`);