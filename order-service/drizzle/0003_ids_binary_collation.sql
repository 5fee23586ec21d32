-- Ids are compared exactly: `alice` and `ALICE` are two customers, `k-1` and `K-1` two idempotency keys.
-- The tables were created with the server's case-insensitive default collation, under which the unique
-- index on request_id refused `K-1` after `k-1` and WHERE customer_id = 'alice' also matched `ALICE`.
-- utf8mb4_bin compares code points; it exists on MariaDB and MySQL 8 alike. Types, NOT NULL and indexes
-- stay as they were; only the comparison changes (no existing row can break a unique index by it, since
-- binary equality is stricter). currency is an ISO code compared with 'EUR' in code, so it is exact too.
-- The tables' and the database's defaults become binary as well, so a column added or re-declared by a
-- later migration (drizzle-kit writes MODIFY without a collation) does not fall back to case-insensitive.
ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
--> statement-breakpoint
ALTER TABLE `orders`
	DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	MODIFY `id` varchar(26) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	MODIFY `customer_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	MODIFY `currency` char(3) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	MODIFY `request_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	MODIFY `voucher_id` varchar(26) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
--> statement-breakpoint
ALTER TABLE `voucher_outbox`
	DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	MODIFY `order_id` varchar(26) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	MODIFY `customer_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	MODIFY `currency` char(3) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	MODIFY `locked_by` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
	MODIFY `voucher_id` varchar(26) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
