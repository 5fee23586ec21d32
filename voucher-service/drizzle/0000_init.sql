CREATE TABLE `vouchers` (
	`id` varchar(26) NOT NULL,
	`code` varchar(32) NOT NULL,
	`order_id` varchar(64) NOT NULL,
	`customer_id` varchar(64) NOT NULL,
	`order_total_cents` bigint NOT NULL,
	`amount_cents` int NOT NULL,
	`currency` char(3) NOT NULL,
	`status` varchar(16) NOT NULL,
	`issued_at` datetime(3) NOT NULL,
	`voided_at` datetime(3),
	`void_reason` varchar(255),
	CONSTRAINT `vouchers_id` PRIMARY KEY(`id`),
	CONSTRAINT `vouchers_order_id_uq` UNIQUE(`order_id`),
	CONSTRAINT `vouchers_code_uq` UNIQUE(`code`)
);
--> statement-breakpoint
CREATE INDEX `vouchers_customer_id_idx` ON `vouchers` (`customer_id`,`id`);--> statement-breakpoint
CREATE INDEX `vouchers_issued_at_idx` ON `vouchers` (`issued_at`,`id`);