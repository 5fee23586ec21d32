import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { Pool } from "@shop/platform/db";
import { DomainError, invalidArgument } from "@shop/platform/errors";
import type { Logger } from "@shop/platform/logger";
import { OrderAdminService, type SkippedVoucherDeliverySchema } from "@shop/sdk/order-admin";
import type { OrderStore } from "../db/order-store.js";
import { pageSize } from "../domain/page-size.js";
import { listDeadDeliveries, outboxStatusOf } from "../outbox/dead.js";

export interface OrderAdminDeps {
  pool: Pool;
  /** The requeue itself is OrderStore.requeueVoucher, the same one RequeueVoucher and the reconciler use. */
  store: OrderStore;
  logger: Logger;
  /** Dead rows read and requeued per round of a requeue-all. Default 500. */
  requeueBatch?: number;
}

export const LIST_DEAD_PAGE = { default: 100, max: 1000 } as const;

// Page tokens carry the last outbox id returned, base64url like the other listings' tokens.
function encodeOutboxToken(id: number): string {
  return Buffer.from(`o${id}`, "utf8").toString("base64url");
}

function decodeOutboxToken(token: string): number {
  if (token === "") return 0;
  const text = /^[A-Za-z0-9_-]{1,40}$/.test(token) ? Buffer.from(token, "base64url").toString("utf8") : "";
  const m = /^o(\d{1,18})$/.exec(text);
  if (!m || encodeOutboxToken(Number(m[1])) !== token) {
    throw invalidArgument("page_token is malformed; pass back next_page_token unchanged");
  }
  return Number(m[1]);
}

type Skipped = MessageInitShape<typeof SkippedVoucherDeliverySchema>;

/**
 * OrderAdminService: dead voucher deliveries for operators. Unauthenticated
 * for now, like every RPC here; it is meant for an admin scope once the
 * services check callers.
 */
export function createOrderAdminServiceImpl(deps: OrderAdminDeps): ServiceImpl<typeof OrderAdminService> {
  const { pool, store } = deps;
  const log = deps.logger.child({ component: "admin" });
  const requeueBatch = deps.requeueBatch ?? 500;

  /** true if requeued; a reason when it was not (the delivery changed under us, or the order refused). */
  async function requeueOne(orderId: string): Promise<true | string> {
    try {
      const { requeued } = await store.requeueVoucher(orderId);
      return requeued ? true : "delivery is no longer dead";
    } catch (err) {
      if (err instanceof DomainError) return err.message;
      log.error({ orderId, err }, `requeueing the dead delivery of order ${orderId} failed`);
      throw err;
    }
  }

  async function requeueGiven(orderIds: string[]) {
    const status = await outboxStatusOf(pool, orderIds);
    const missing = orderIds.filter((id) => !status.has(id));
    const existing = new Set((await store.getMany(missing)).map((o) => o.id));
    const requeued: string[] = [];
    const skipped: Skipped[] = [];
    for (const orderId of orderIds) {
      const s = status.get(orderId);
      if (s === undefined) {
        skipped.push({
          orderId,
          reason: existing.has(orderId)
            ? "no voucher delivery recorded for this order (RequeueVoucher records a missing one)"
            : "order not found",
        });
        continue;
      }
      if (s !== "dead") {
        skipped.push({ orderId, reason: `delivery is ${s}, not dead` });
        continue;
      }
      const done = await requeueOne(orderId);
      if (done === true) requeued.push(orderId);
      else skipped.push({ orderId, reason: done });
    }
    return { requeued, skipped };
  }

  /** Every dead row, in id order, one batch at a time; stops early if the caller goes away (a rerun picks up the rest). */
  async function requeueAll(signal: AbortSignal) {
    let afterId = 0;
    let count = 0;
    const skipped: Skipped[] = [];
    for (;;) {
      const rows = await listDeadDeliveries(pool, afterId, requeueBatch);
      for (const row of rows) {
        const done = await requeueOne(row.orderId);
        if (done === true) count++;
        else skipped.push({ orderId: row.orderId, reason: done });
      }
      if (rows.length < requeueBatch || signal.aborted) break;
      afterId = rows[rows.length - 1]!.id;
    }
    return { count, skipped };
  }

  return {
    async listDeadVoucherDeliveries(req) {
      const limit = pageSize(req.pageSize, LIST_DEAD_PAGE);
      const afterId = decodeOutboxToken(req.pageToken);
      const rows = await listDeadDeliveries(pool, afterId, limit + 1);
      const page = rows.slice(0, limit);
      return {
        deliveries: page.map((r) => ({
          orderId: r.orderId,
          customerId: r.customerId,
          totalCents: BigInt(r.totalCents),
          currency: r.currency,
          attempts: r.attempts,
          lastError: r.lastError ?? "",
          createdAt: timestampFromDate(r.createdAt),
        })),
        nextPageToken: rows.length > limit ? encodeOutboxToken(page[page.length - 1]!.id) : "",
      };
    },

    // The proto's rules have refused an empty request, order_ids with all=true, and bad or too many ids.
    async requeueDeadVoucherDeliveries(req, ctx) {
      if (req.all) {
        const { count, skipped } = await requeueAll(ctx.signal);
        log.info({ all: true, requeued: count, skipped: skipped.length }, `requeued ${count} dead voucher deliveries`);
        return { requeuedCount: BigInt(count), skipped };
      }
      const orderIds = [...new Set(req.orderIds)];
      const { requeued, skipped } = await requeueGiven(orderIds);
      log.info(
        { orderIds: requeued, skippedOrderIds: skipped.map((s) => s.orderId) },
        `requeued ${requeued.length} dead voucher deliveries, skipped ${skipped.length}`,
      );
      return { requeuedCount: BigInt(requeued.length), requeuedOrderIds: requeued, skipped };
    },
  };
}
