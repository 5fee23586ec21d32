-- The system accounts on the other side of every movement, one pair per
-- currency (only EUR exists): FUNDING pays top-ups in, CLEARING receives
-- charges and pays refunds. Their ids cannot be a customer account's (ULIDs).
INSERT INTO `accounts` (`id`, `customer_id`, `kind`, `currency`, `balance_cents`, `opened_at`) VALUES
  ('system:funding:EUR', NULL, 'FUNDING', 'EUR', 0, NOW(3)),
  ('system:clearing:EUR', NULL, 'CLEARING', 'EUR', 0, NOW(3));
