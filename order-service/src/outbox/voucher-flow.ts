import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { defineFlow, type Claimed, type Flow, type ItemResult } from "@shop/engine";
import { codeName } from "@shop/engine/classify";
import type { PoolConnection, RowDataPacket } from "mysql2/promise";
import { normalizeTraceparent } from "@shop/platform/tracing";
import type { VoucherClient } from "@shop/sdk/clients";
import { BatchIssueVouchersRequestSchema, type IssueVoucherRequestSchema } from "@shop/sdk/voucher";

/**
 * The voucher flow on the delivery engine: the table voucher_outbox (written
 * by MarkOrderSent in the transaction that marks the order sent), its row
 * (what the voucher service needs), the calls that deliver it
 * (BatchIssueVouchers, IssueVoucher per row when a batch is refused as a
 * whole), the voucher id the ack keeps, and the retention hook that moves
 * that id onto the order before the row is removed.
 */
export interface VoucherRequest {
  orderId: string;
  customerId: string;
  totalCents: number;
  currency: string;
}

export type VoucherRow = Claimed<VoucherRequest>;

/** What a delivery gives back: the issued (or replayed) voucher's id, kept in voucher_outbox.voucher_id. */
export interface VoucherIssued {
  voucherId: string;
}

/**
 * The row's stored traceparent goes along normalized to version 00, or empty
 * if it is unreadable: IssueVoucher refuses a malformed one (INVALID_ARGUMENT,
 * which would park the row as dead), and tracing must never cost a voucher.
 */
export function requestFor(row: VoucherRequest & { traceparent?: string }): MessageInitShape<typeof IssueVoucherRequestSchema> {
  return {
    orderId: row.orderId,
    customerId: row.customerId,
    orderTotalCents: BigInt(row.totalCents),
    currency: row.currency,
    traceparent: normalizeTraceparent(row.traceparent) ?? "",
  };
}

/**
 * The largest BatchIssueVouchers request of `items` rows, in bytes as the
 * receiver counts them against its size limit (grpc-js'
 * max_receive_message_length is the encoded protobuf message). Each field is
 * at its column's longest (order_id VARCHAR(26), customer_id VARCHAR(64),
 * currency CHAR(3), utf8mb4 so up to 4 bytes a character), total_cents takes
 * a BIGINT's longest varint, the traceparent is always 55 characters.
 */
export function largestBatchBytes(items: number): number {
  const widest = (chars: number) => String.fromCodePoint(0x10ffff).repeat(chars);
  const item = {
    orderId: widest(26),
    customerId: widest(64),
    orderTotalCents: -(2n ** 63n),
    currency: widest(3),
    traceparent: `00-${"f".repeat(32)}-${"f".repeat(16)}-ff`,
  };
  const one = toBinary(BatchIssueVouchersRequestSchema, create(BatchIssueVouchersRequestSchema, { items: [item] })).length;
  return one * items;
}

/**
 * What an operator should check when the voucher service refuses the relay
 * itself (a `misconfigured` code). Names the setting, never the token.
 */
export function misconfigurationHint(code: number): string {
  switch (code as Code) {
    case Code.Unauthenticated:
      return "the voucher service does not accept the relay's token (missing, expired, addressed to another service or from another issuer, or signed by a key it does not trust): check RELAY_TOKEN / RELAY_TOKEN_FILE against the voucher service's keys (AUTH_JWKS_FILE, AUTH_JWKS or AUTH_PUBLIC_KEYS), AUTH_AUDIENCE and AUTH_ISSUER";
    case Code.PermissionDenied:
      return "the relay's token lacks the scope IssueVoucher needs (vouchers:issue): give the relay a token of the relay role (npm run auth -- token --key <file> --role relay)";
    case Code.Unimplemented:
      return "VOUCHER_SERVICE_URL does not serve shop.voucher.v1.VoucherService/BatchIssueVouchers: wrong URL or port, or an older voucher service";
    default:
      return "the relay's settings for the voucher service are wrong";
  }
}

/** The flow's columns and texts, without the client: enough for claims, acks, stats and cleanup. */
function voucherFlowDefinition(voucher?: VoucherClient) {
  const client = (): VoucherClient => {
    if (!voucher) throw new Error("this voucher flow was defined without a voucher client: it can claim and settle, not deliver");
    return voucher;
  };
  return defineFlow<VoucherRequest, VoucherIssued>({
    name: "voucher",
    table: "voucher_outbox",
    columns: ["order_id", "customer_id", "total_cents", "currency"],
    fromRow: (r) => ({
      orderId: String(r.order_id),
      customerId: String(r.customer_id),
      totalCents: Number(r.total_cents),
      currency: String(r.currency),
    }),
    key: { name: "orderId", of: (row) => row.orderId },
    resultColumns: ["voucher_id"],
    resultValues: (issued) => [issued.voucherId],
    deliver: {
      batchMethod: "BatchIssueVouchers",
      singleMethod: "IssueVoucher",
      async batch(rows, call) {
        const res = await client().batchIssueVouchers({ items: rows.map(requestFor) }, call);
        // Matched by order id rather than position, so a server that reorders or
        // drops items cannot attach a voucher to the wrong row.
        const byOrder = new Map(res.results.map((r) => [r.orderId, r]));
        return rows.map((row): ItemResult<VoucherIssued> => {
          const r = byOrder.get(row.orderId);
          if (!r) return { own: "BatchIssueVouchers: no result for this order in the response" };
          if (r.errorCode !== 0) return { code: r.errorCode, message: r.errorMessage };
          if (!r.voucher?.id) return { own: "BatchIssueVouchers item: success without a voucher id" };
          return { result: { voucherId: r.voucher.id }, created: r.created };
        });
      },
      async single(row, call) {
        const res = await client().issueVoucher(requestFor(row), call);
        if (!res.voucher?.id) return { own: "IssueVoucher: success without a voucher id" };
        return { result: { voucherId: res.voucher.id }, created: res.created };
      },
    },
    largestRequestBytes: largestBatchBytes,
    receiverLimitSetting: "the voucher service's VOUCHER_MAX_REQUEST_BYTES",
    archive: {
      columns: ["order_id"],
      // The orders first, then the outbox rows: the order MarkOrderSent and RequeueVoucher lock in.
      async lock(conn: PoolConnection, rows: RowDataPacket[]) {
        await conn.query(`SELECT id FROM orders WHERE id IN (?) ORDER BY id FOR UPDATE`, [[...new Set(rows.map((r) => String(r.order_id)))]]);
      },
      // The voucher id moves to orders.voucher_id in the transaction that deletes the row, so an order never shows "no voucher" in between.
      async copy(conn: PoolConnection, rows: RowDataPacket[]) {
        const cases = rows.map(() => "WHEN ? THEN ?").join(" ");
        await conn.query(`UPDATE orders SET voucher_id = CASE id ${cases} END WHERE id IN (?)`, [
          ...rows.flatMap((r) => [r.order_id, r.voucher_id]),
          rows.map((r) => r.order_id),
        ]);
      },
    },
    texts: {
      delivered: "voucher batch delivered",
      retry: "voucher delivery failed; retry scheduled",
      refused: "voucher refused for good; outbox row is dead until requeued",
      ackFailed: "vouchers issued but the ack failed; the rows are delivered again after their lease (the voucher service replays, created=false)",
      misconfigured: (code) =>
        `the voucher service refused the relay itself (${codeName(code)}): ${misconfigurationHint(code)}; ` +
        "no voucher is delivered until this is fixed, the rows stay pending and are retried with backoff",
    },
  });
}

export type VoucherFlow = Flow<VoucherRequest, VoucherIssued>;

/** The voucher flow for claims, acks, stats and cleanup: it has no client and cannot deliver. */
export const voucherOutbox: VoucherFlow = voucherFlowDefinition();

/** The voucher flow delivering with `voucher`. */
export function voucherFlow(voucher: VoucherClient): VoucherFlow {
  return voucherFlowDefinition(voucher);
}
