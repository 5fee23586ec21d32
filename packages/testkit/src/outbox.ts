import type { TestDatabase } from "./shared-servers.js";

/** Outbox rows by status, read straight from an order database (every status present, 0 when none). */
export async function outboxCounts(db: Pick<TestDatabase, "sql">): Promise<Record<string, number>> {
  const out = await db.sql("SELECT status, COUNT(*) FROM voucher_outbox GROUP BY status");
  const counts: Record<string, number> = { pending: 0, delivered: 0, dead: 0 };
  for (const line of out.trim().split("\n").filter(Boolean)) {
    const [status, n] = line.split("\t");
    counts[status!] = Number(n);
  }
  return counts;
}
