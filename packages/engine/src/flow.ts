import type { PoolConnection, RowDataPacket } from "mysql2/promise";

/**
 * A flow: one outbox table, the row type its payload columns map to, and the
 * calls that deliver those rows. The engine (claim, ack, fail, relay, cleanup)
 * knows nothing else about what it delivers; the voucher flow
 * (order-service/src/outbox/voucher-flow.ts) is one use of it.
 *
 * The table has the engine's columns beside the flow's own:
 *
 *   id              BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY
 *   status          VARCHAR(16) NOT NULL          'pending' | 'delivered' | 'dead'
 *   attempts        INT NOT NULL DEFAULT 0        counted at claim time
 *   next_attempt_at DATETIME(3) NOT NULL          due time; a claim pushes it out by the lease
 *   locked_by       VARCHAR(64)                   the claim token acks and failures are fenced on
 *   last_error      VARCHAR(1024)
 *   created_at      DATETIME(3) NOT NULL
 *   delivered_at    DATETIME(3)
 *   traceparent     VARCHAR(55)                   the writer's span, linked from the delivery span
 *   INDEX <table>_claim_idx (status, next_attempt_at, id)
 *   INDEX <table>_delivered_idx (status, delivered_at, id)
 *
 * outboxTableDdl() writes exactly that, for a flow's migration.
 */
export interface FlowDefinition<Row extends object, Result> {
  /** Names the flow in log lines and span attributes ("voucher"). */
  name: string;
  /** The outbox table. Configuration, never input: checked against IDENTIFIER when the flow is defined. */
  table: string;
  /** Default `${table}_claim_idx`: (status, next_attempt_at, id). */
  claimIndex?: string;
  /** Default `${table}_delivered_idx`: (status, delivered_at, id). */
  deliveredIndex?: string;
  /** The payload columns the claim reads, in this order; fromRow maps them. */
  columns: readonly string[];
  /** A claimed row's payload, from the columns above (the engine adds id, attempts and the rest). */
  fromRow(r: RowDataPacket): Row;
  /** The business key of a row, for log lines: `orderId` logs as orderId / orderIds. */
  key: { name: string; of(row: Row): string };
  /** Columns the ack writes from a delivery's result (voucher_id); empty when the flow keeps none. */
  resultColumns?: readonly string[];
  /** The values of resultColumns for one delivered row, in their order. */
  resultValues?(result: Result): unknown[];
  /** The calls that deliver rows; the engine batches, splits and falls back around them. */
  deliver: Transport<Row, Result>;
  /**
   * The largest batch request of n rows in bytes, as the receiver counts it
   * against its size limit; with it, a relay refuses a batch size the receiver
   * could refuse (relayConfigProblems).
   */
  largestRequestBytes?(rows: number): number;
  /** Names the receiver's request-size setting in that refusal. */
  receiverLimitSetting?: string;
  /** Retention: what must outlive a delivered row, copied in the transaction that deletes it. */
  archive?: Archive;
  /** Log lines; the defaults are built from name. */
  texts?: Partial<FlowTexts>;
}

/** What one item of a batch (or one single call) came back as. */
export type ItemResult<Result> =
  /** Delivered; `created` is false when the receiver replayed an earlier outcome. */
  | { result: Result; created: boolean }
  /** The receiver answered this item with a status code (the call as a whole succeeded). */
  | { code: number; message: string }
  /** The answer for this item is unusable (missing, success without a result): the row's own failure. */
  | { own: string };

/** A flow's calls to its receiver. Either may throw: the error's status decides what happens (classify.ts). */
export interface Transport<Row extends object, Result> {
  /** For logs, metrics and last_error ("BatchIssueVouchers"). */
  batchMethod: string;
  /** The per-row call used when a batch is refused as a whole ("IssueVoucher"). */
  singleMethod: string;
  /** One call for all rows; answers one ItemResult per row, in the rows' order. */
  batch(rows: Array<Claimed<Row>>, call: CallOptions): Promise<Array<ItemResult<Result>>>;
  /** One call for one row. */
  single(row: Claimed<Row>, call: CallOptions): Promise<ItemResult<Result>>;
}

export interface CallOptions {
  /** The call's deadline. */
  timeoutMs: number;
}

/** Retention's hooks, in the transaction that removes a batch of delivered rows. */
export interface Archive {
  /** Columns read with each removable row besides id and the result columns. */
  columns: readonly string[];
  /**
   * Locks what copy() writes, before the engine locks the outbox rows: the
   * order in which the flow's writers take the same locks, so the cleanup
   * cannot deadlock against them.
   */
  lock?(conn: PoolConnection, rows: RowDataPacket[]): Promise<void>;
  /** Copies what must outlive the rows (the voucher id onto its order); only rows still delivered with the result first read. */
  copy(conn: PoolConnection, rows: RowDataPacket[]): Promise<void>;
}

export interface FlowTexts {
  delivered: string;
  retry: string;
  refused: string;
  gaveUp(attempts: number): string;
  ackFailed: string;
  /** The receiver refused the caller itself (a `misconfigured` code); names settings, never a token. */
  misconfigured(code: number): string;
}

/** What the engine adds to a claimed row's payload. */
export interface ClaimMeta {
  id: number;
  /** Includes the attempt this claim starts (1 on the first delivery). */
  attempts: number;
  /** NOW(3) − created_at at the claim, both on the database clock, so app-host clock skew does not enter the latency metric. */
  ageAtClaimMs?: number;
  /** W3C traceparent stored by the writer, if it had a span; linked from the delivery span. */
  traceparent?: string;
  /**
   * The previous attempt failed on the row's own account (its last_error
   * carries OWN_FAILURE_MARK): it is sent apart from its neighbours, so it
   * does not fail their batch again.
   */
  failedOnItsOwn?: boolean;
}

export type Claimed<Row extends object> = Row & ClaimMeta;

/**
 * Starts the last_error of a failure that was the row's own: its own item
 * failed in an answered batch, or it failed alone while the receiver
 * answered its neighbours. Also kept inside "gave up after N attempts: …", so
 * a parked row that is requeued is sent apart at once.
 */
export const OWN_FAILURE_MARK = "failed on its own: ";

/**
 * Table, index and column names are written into SQL text, so they are
 * checked once, when the flow is defined, against a plain identifier:
 * letters, digits and underscores, 64 characters at most (MariaDB's limit).
 * They come from code, never from requests; the check keeps a typo or a
 * stray quote from becoming SQL.
 */
export const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/** The engine's own columns; a flow's columns may not reuse them. */
export const ENGINE_COLUMNS: readonly string[] = [
  "id",
  "status",
  "attempts",
  "next_attempt_at",
  "locked_by",
  "last_error",
  "created_at",
  "delivered_at",
  "traceparent",
];

export function checkIdentifier(what: string, name: string): string {
  if (!IDENTIFIER.test(name)) throw new Error(`invalid ${what} ${JSON.stringify(name)}: must match ${IDENTIFIER}`);
  return name;
}

/** A defined flow: its definition checked, defaults filled in, and its SQL built once. */
export interface Flow<Row extends object = object, Result = unknown> {
  readonly name: string;
  readonly table: string;
  readonly claimIndex: string;
  readonly deliveredIndex: string;
  readonly columns: readonly string[];
  readonly resultColumns: readonly string[];
  readonly def: FlowDefinition<Row, Result>;
  readonly texts: FlowTexts;
  readonly sql: FlowSql;
  resultValues(result: Result): unknown[];
}

/** Any flow, for the parts of the engine that touch only its table. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyFlow = Flow<any, any>;

export interface FlowSql {
  claimSelect: string;
  claimUpdate: string;
  lockOwned: string;
  stats: string;
  cleanupSelect: string;
}

/**
 * Checks a flow definition and builds its SQL. Throws on a name that is not a
 * plain identifier, on a flow column that is one of the engine's, and on
 * result columns without resultValues.
 */
export function defineFlow<Row extends object, Result>(def: FlowDefinition<Row, Result>): Flow<Row, Result> {
  const table = checkIdentifier("outbox table", def.table);
  const claimIndex = checkIdentifier("claim index", def.claimIndex ?? `${table}_claim_idx`);
  const deliveredIndex = checkIdentifier("delivered index", def.deliveredIndex ?? `${table}_delivered_idx`);
  const resultColumns = [...(def.resultColumns ?? [])];
  const archiveColumns = [...(def.archive?.columns ?? [])];
  for (const c of [...def.columns, ...resultColumns, ...archiveColumns]) {
    checkIdentifier("column", c);
    if (ENGINE_COLUMNS.includes(c)) throw new Error(`flow ${def.name}: column ${c} is one of the engine's own`);
  }
  if (resultColumns.length > 0 && !def.resultValues) throw new Error(`flow ${def.name}: resultColumns need resultValues`);
  const name = def.name;
  const texts: FlowTexts = {
    delivered: `${name} batch delivered`,
    retry: `${name} delivery failed; retry scheduled`,
    refused: `${name} refused for good; outbox row is dead until requeued`,
    gaveUp: (attempts) =>
      `${name} delivery gave up after ${attempts} attempts, the last failing on its own account; outbox row is dead until requeued`,
    ackFailed: `${name} delivered but the ack failed; the rows are delivered again after their lease (the receiver replays)`,
    misconfigured: () => `the receiver of ${name} refused the relay itself; the rows stay pending and are retried with backoff`,
    ...def.texts,
  };
  return {
    name,
    table,
    claimIndex,
    deliveredIndex,
    columns: [...def.columns],
    resultColumns,
    def,
    texts,
    sql: buildSql(table, claimIndex, deliveredIndex, [...def.columns], resultColumns, archiveColumns),
    resultValues: (result) => {
      const values = def.resultValues ? def.resultValues(result) : [];
      if (values.length !== resultColumns.length) throw new Error(`flow ${name}: resultValues gave ${values.length} values for ${resultColumns.length} columns`);
      return values;
    },
  };
}

function buildSql(
  table: string,
  claimIndex: string,
  deliveredIndex: string,
  columns: string[],
  resultColumns: string[],
  archiveColumns: string[],
): FlowSql {
  return {
    /**
     * The SELECT orders by exactly the claim index (status, next_attempt_at, id),
     * so InnoDB walks the index and stops after LIMIT unlocked rows. With a
     * filesort it would read and lock every matching row before sorting, and
     * competing relays would find nothing left to skip to.
     *
     * FORCE INDEX because the optimizer does not always choose it: on MariaDB
     * 10.11, while most of the table is pending and due (a young outbox, or a
     * backlog after an outage, exactly when relays compete), EXPLAIN showed a
     * full scan with "Using filesort" at 10 and 300 rows; it only picked the
     * index once most rows were delivered. MySQL 8 accepts the same hint.
     * Tests EXPLAIN this text in both table shapes.
     */
    claimSelect: `SELECT ${["id", ...columns, "attempts", "traceparent"].join(", ")},
       COALESCE(last_error LIKE '%${OWN_FAILURE_MARK}%', 0) AS own_failure,
       TIMESTAMPDIFF(MICROSECOND, created_at, NOW(3)) AS age_us
  FROM ${table} FORCE INDEX (${claimIndex})
 WHERE status = 'pending' AND next_attempt_at <= NOW(3)
 ORDER BY status, next_attempt_at, id
 LIMIT ?
 FOR UPDATE SKIP LOCKED`,
    claimUpdate: `UPDATE ${table}
          SET locked_by = ?, next_attempt_at = DATE_ADD(NOW(3), INTERVAL ? MICROSECOND), attempts = attempts + 1
        WHERE id IN (?)`,
    lockOwned: `SELECT id FROM ${table} WHERE id IN (?) AND locked_by = ? ORDER BY id FOR UPDATE`,
    /**
     * Counts pending and dead rows in one pass over the claim index
     * (status, next_attempt_at, id): the status prefix is a range, the scan is
     * index-only ("Using index"), and GROUP BY status follows the index order, so
     * no temporary table. Its cost grows with pending + dead rows, never with the
     * delivered rows that make up most of the table.
     *
     * The oldest pending row is the one with the smallest id: ids are
     * AUTO_INCREMENT and created_at is stamped in the inserting transaction, so
     * id order is creation order (a requeued row keeps both). MIN(id) comes from
     * the same index entries (InnoDB keeps the primary key in every secondary
     * index), and one primary-key lookup fetches its created_at. The age is
     * computed on the database clock, the one that wrote created_at.
     */
    stats: `SELECT g.status, g.n, TIMESTAMPDIFF(MICROSECOND, o.created_at, NOW(3)) AS age_us
  FROM (SELECT status, COUNT(*) AS n, MIN(id) AS min_id
          FROM ${table} FORCE INDEX (${claimIndex})
         WHERE status IN ('pending', 'dead')
         GROUP BY status) g
  LEFT JOIN ${table} o ON o.id = g.min_id`,
    /**
     * The delivered rows due for removal, oldest first, on the
     * (status, delivered_at, id) index: the scan starts at the oldest delivered
     * row and stops after LIMIT, so it never reads pending rows nor rows inside
     * the retention period. A plain (non-locking) read: the rows are locked only
     * by the removal, after what the archive hook locks.
     */
    cleanupSelect: `SELECT ${["id", ...archiveColumns, ...resultColumns].join(", ")}
  FROM ${table} FORCE INDEX (${deliveredIndex})
 WHERE status = 'delivered' AND delivered_at < DATE_SUB(NOW(3), INTERVAL ? MICROSECOND)
 ORDER BY status, delivered_at, id
 LIMIT ?`,
  };
}

/**
 * The CREATE TABLE of a flow's outbox: the engine's columns and indexes
 * around the flow's own column definitions (`order_id VARCHAR(26) COLLATE
 * utf8mb4_bin NOT NULL`, ...) and any extra index lines. For a flow's
 * migration; the voucher flow's table predates it and has this shape.
 *
 * status is ASCII: MariaDB 10.11 drops `status = 'pending'` as a constant of
 * the claim's ORDER BY (and sorts: "Using filesort") when the column's
 * collation differs from the connection's, as utf8mb4_bin does from the
 * pool's utf8mb4_unicode_ci. A string literal converts to ASCII exactly, so
 * the index order serves whatever the connection's collation is (the note
 * flow's test EXPLAINs it).
 */
export function outboxTableDdl(table: string, columnDefinitions: readonly string[], extraIndexes: readonly string[] = []): string {
  checkIdentifier("outbox table", table);
  return `CREATE TABLE IF NOT EXISTS ${table} (
  id BIGINT UNSIGNED AUTO_INCREMENT NOT NULL,
${columnDefinitions.map((c) => `  ${c},`).join("\n")}
  status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  attempts INT NOT NULL DEFAULT 0,
  next_attempt_at DATETIME(3) NOT NULL,
  locked_by VARCHAR(64) COLLATE utf8mb4_bin,
  last_error VARCHAR(1024),
  created_at DATETIME(3) NOT NULL,
  delivered_at DATETIME(3),
  traceparent VARCHAR(55),
  PRIMARY KEY (id),
  INDEX ${table}_claim_idx (status, next_attempt_at, id),
  INDEX ${table}_delivered_idx (status, delivered_at, id)${extraIndexes.map((i) => `,\n  ${i}`).join("")}
) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin`;
}
