CREATE TABLE `orders` (
	`id` varchar(26) NOT NULL,
	`customer_id` varchar(64) NOT NULL,
	`total_cents` bigint NOT NULL,
	`currency` char(3) NOT NULL,
	`status` varchar(16) NOT NULL,
	`request_id` varchar(64) NOT NULL,
	`created_at` datetime(3) NOT NULL,
	`updated_at` datetime(3) NOT NULL,
	`sent_at` datetime(3),
	`delivered_at` datetime(3),
	`cancelled_at` datetime(3),
	CONSTRAINT `orders_id` PRIMARY KEY(`id`),
	CONSTRAINT `orders_request_id_uq` UNIQUE(`request_id`)
);
--> statement-breakpoint
CREATE TABLE `voucher_outbox` (
	`id` bigint unsigned AUTO_INCREMENT NOT NULL,
	`order_id` varchar(26) NOT NULL,
	`customer_id` varchar(64) NOT NULL,
	`total_cents` bigint NOT NULL,
	`currency` char(3) NOT NULL,
	`status` varchar(16) NOT NULL,
	`attempts` int NOT NULL DEFAULT 0,
	`next_attempt_at` datetime(3) NOT NULL,
	`locked_by` varchar(64),
	`last_error` varchar(1024),
	`voucher_id` varchar(26),
	`created_at` datetime(3) NOT NULL,
	`delivered_at` datetime(3),
	CONSTRAINT `voucher_outbox_id` PRIMARY KEY(`id`),
	CONSTRAINT `voucher_outbox_order_id_uq` UNIQUE(`order_id`)
);
--> statement-breakpoint
CREATE INDEX `orders_customer_id_idx` ON `orders` (`customer_id`,`id`);--> statement-breakpoint
CREATE INDEX `orders_sent_at_idx` ON `orders` (`sent_at`,`id`);--> statement-breakpoint
CREATE INDEX `voucher_outbox_claim_idx` ON `voucher_outbox` (`status`,`next_attempt_at`,`id`);