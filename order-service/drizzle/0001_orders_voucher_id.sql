ALTER TABLE `orders` ADD `voucher_id` varchar(26);--> statement-breakpoint
CREATE INDEX `voucher_outbox_delivered_idx` ON `voucher_outbox` (`status`,`delivered_at`,`id`);