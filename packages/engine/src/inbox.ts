import type { PoolConnection, RowDataPacket } from "mysql2/promise";

/**
 * The receiving half of exactly-once: a message's key is recorded in the same
 * transaction as its effect, with the outcome the effect decided. A message
 * delivered again (the sender's retry after a lost reply, a replayed outbox
 * row) finds its key and gets the recorded outcome back; the effect never runs
 * twice, because the key's row and the effect commit or roll back together.
 *
 * The inbox table (one per receiving database; inboxTableSql gives its shape):
 * message_key is the primary key, compared exactly (utf8mb4_bin); facts is
 * what the message said, so a second message under the same key that says
 * something else is told apart from a replay; outcome is the recorded answer.
 */

export interface InboxMessage<T> {
  /** The message's identity, e.g. "charge:" + order id. At most 128 characters. */
  key: string;
  /**
   * What the message asks, as a canonical string (same message, same string:
   * build it from fixed fields in a fixed order). A replay must carry the same.
   */
  facts: string;
  /**
   * Runs once per key, inside the caller's transaction, after the key is
   * claimed; its result is the outcome recorded and answered to every replay.
   * It must be JSON-serialisable (no bigint).
   */
  effect: () => Promise<T>;
  /** The inbox table's name. Default "inbox". */
  table?: string;
}

export type InboxAnswer<T> =
  /** This call ran the effect; the outcome commits with the caller's transaction. */
  | { kind: "handled"; outcome: T }
  /** The key was handled before with the same facts: its recorded outcome. */
  | { kind: "replayed"; outcome: T }
  /** The key was handled before with other facts: nothing ran. */
  | { kind: "conflict"; recordedFacts: string };

const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

function tableOf(name: string | undefined): string {
  const table = name ?? "inbox";
  // The name is spliced into SQL: only a plain identifier is accepted.
  if (!TABLE_NAME.test(table)) throw new Error(`inbox table name ${JSON.stringify(table)} is not a plain identifier`);
  return `\`${table}\``;
}

/**
 * Handles a message at most once per key, in the transaction `conn` has open
 * (the caller begins and commits it; handleOnce issues no COMMIT).
 *
 * The key is claimed first, with a plain INSERT: of two transactions racing
 * on one key, the second waits on the first's lock on the row until it
 * commits (the second then gets a duplicate-key error: a replay) or rolls back
 * (the second's insert then goes in, and it runs the effect itself). Not
 * ON DUPLICATE KEY UPDATE: with the client's FOUND_ROWS flag (mysql2's
 * default) its affected-rows count cannot tell a claim from a duplicate. So the effect runs
 * in at most one transaction that commits, under READ COMMITTED as under
 * REPEATABLE READ, and a replay reads a committed outcome.
 */
export async function handleOnce<T>(conn: PoolConnection, message: InboxMessage<T>): Promise<InboxAnswer<T>> {
  const table = tableOf(message.table);
  let claimed = true;
  try {
    await conn.query(`INSERT INTO ${table} (message_key, facts, outcome, received_at) VALUES (?, ?, NULL, NOW(3))`, [message.key, message.facts]);
  } catch (err) {
    // A duplicate key fails this statement only; the transaction goes on.
    if (!isDuplicateKey(err)) throw err;
    claimed = false;
  }
  if (claimed) {
    const outcome = await message.effect();
    await conn.query(`UPDATE ${table} SET outcome = ? WHERE message_key = ?`, [JSON.stringify(outcome), message.key]);
    return { kind: "handled", outcome };
  }
  const [rows] = await conn.query<RowDataPacket[]>(`SELECT facts, outcome FROM ${table} WHERE message_key = ?`, [message.key]);
  const row = rows[0];
  // The duplicate was committed (its insert's lock was waited for), so it is there, outcome and all.
  if (!row || row.outcome === null) throw new Error(`inbox ${table}: key ${JSON.stringify(message.key)} is recorded without an outcome`);
  if (row.facts !== message.facts) return { kind: "conflict", recordedFacts: String(row.facts) };
  return { kind: "replayed", outcome: JSON.parse(String(row.outcome)) as T };
}

function isDuplicateKey(err: unknown): boolean {
  return (err as { errno?: number } | null)?.errno === 1062;
}

/** The recorded outcome of a key, if it was handled (for readers outside a handling transaction, e.g. a reconciler). */
export async function recordedOutcome<T>(conn: Pick<PoolConnection, "query">, key: string, table?: string): Promise<T | undefined> {
  const [rows] = await conn.query<RowDataPacket[]>(`SELECT outcome FROM ${tableOf(table)} WHERE message_key = ?`, [key]);
  const outcome = rows[0]?.outcome;
  return outcome === undefined || outcome === null ? undefined : (JSON.parse(String(outcome)) as T);
}

/**
 * The inbox table's DDL (MariaDB and MySQL 8). A service's own migrations
 * create it; this is its reference shape, used as is by the engine's tests.
 */
export function inboxTableSql(table = "inbox"): string {
  return `CREATE TABLE ${tableOf(table)} (
  \`message_key\` varchar(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  \`facts\` text CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  \`outcome\` text CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  \`received_at\` datetime(3) NOT NULL,
  CONSTRAINT \`${table}_pk\` PRIMARY KEY(\`message_key\`)
)`;
}
