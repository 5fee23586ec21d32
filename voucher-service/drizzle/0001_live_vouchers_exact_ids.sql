-- One statement, so the change is all or nothing (a failed run leaves the
-- table as it was and the next start tries again).
-- Ids compare exactly (utf8mb4_bin): `alice` and `ALICE` are two customers,
-- `ORD-1` and `ord-1` two orders. No existing unique key can be broken by it:
-- rows distinct under a case-insensitive collation are distinct under binary.
-- UNIQUE(order_id) becomes UNIQUE(live_order_id): the order id while the
-- voucher is ISSUED, NULL once voided, so a voided voucher no longer stands
-- in the way of the order's one live voucher. order_id keeps a plain index.
ALTER TABLE `vouchers`
  MODIFY `id` varchar(26) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  MODIFY `code` varchar(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  MODIFY `order_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  MODIFY `customer_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  ADD `live_order_id` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
    GENERATED ALWAYS AS (CASE WHEN `status` = 'ISSUED' THEN `order_id` END) STORED,
  DROP INDEX `vouchers_order_id_uq`,
  ADD CONSTRAINT `vouchers_live_order_id_uq` UNIQUE(`live_order_id`),
  ADD INDEX `vouchers_order_id_idx` (`order_id`);
