import { retryTransient } from "@shop/platform/db";
import { requireId } from "@shop/platform/ids";
import { alreadyExists, notFound, type DomainError } from "@shop/platform/errors";
import { newId } from "@shop/platform/ids";
import type { Logger } from "@shop/platform/logger";
import { SpanStatusCode, withChildSpan } from "@shop/platform/tracing";
import type { VoucherStore } from "./db/voucher-store.js";
import { classifyIssue, newVoucherCode, type IssueOutcome, type IssueRequest, type Voucher } from "./domain/voucher.js";
import {
  checkBatchShape,
  orderIdsToLookUp,
  pageSize,
  validateIssueRequest,
  voidReason,
  type RawIssueRequest,
} from "./domain/validation.js";
import { decodeIdToken, decodeTimeToken, encodeIdToken, encodeTimeToken, timeWindow } from "@shop/platform/paging";

export interface VouchersDeps {
  store: VoucherStore;
  logger: Logger;
  /** Items per BatchIssueVouchers call. Default 1000, the proto's documented maximum. */
  maxBatch?: number;
  /** Code generator; tests replace it to force a code collision. Default: 80 random bits. */
  newCode?: () => string;
  /** Times a whole round is repeated for orders whose fresh code collided. Default 5: each round fails with odds ~2^-80 per item. */
  maxCodeAttempts?: number;
  /** Deadlock retries per statement. Default 10: racing duplicate inserts on one key deadlock now and then under load. */
  deadlockAttempts?: number;
}

/** One batch item's answer: an outcome, or the refusal IssueVoucher would have given it. */
export type BatchItemResult = { orderId: string } & ({ voucher: Voucher; created: boolean } | { error: DomainError });

export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

/**
 * The voucher service's operations on plain values: validation, the
 * exactly-once issue protocol, and logging of every outcome. Transport
 * mapping lives in grpc/routes.ts.
 */
export function createVouchers(deps: VouchersDeps) {
  const { store, logger } = deps;
  const maxBatch = deps.maxBatch ?? 1000;
  const newCode = deps.newCode ?? newVoucherCode;
  const maxCodeAttempts = deps.maxCodeAttempts ?? 5;
  const deadlockAttempts = deps.deadlockAttempts ?? 10;

  /**
   * One upsert for all requests, one read back by order_id, and the row found
   * decides each outcome (see classifyIssue). An order with no row after the
   * upsert lost on the code's unique key, not on its own: it goes again with a
   * new code. Retrying a statement is safe because the upsert writes nothing
   * for an order that already has a voucher, including our own earlier try.
   */
  async function issue(requests: IssueRequest[]): Promise<IssueOutcome[]> {
    const outcomes = new Map<string, IssueOutcome>();
    let pending = requests;
    for (let attempt = 1; pending.length > 0; attempt++) {
      if (attempt > maxCodeAttempts) {
        throw new Error(`no free voucher code after ${maxCodeAttempts} attempts for ${pending.length} order(s)`);
      }
      const candidates = pending.map((r) => ({ ...r, id: newId(), code: newCode() }));
      await retryTransient(() => store.insertIgnoringDuplicates(candidates), deadlockAttempts);
      const rows = await retryTransient(() => store.findByOrderIds(pending.map((r) => r.orderId)), deadlockAttempts);
      const byOrder = new Map(rows.map((v) => [v.orderId, v]));
      const collided: IssueRequest[] = [];
      for (const c of candidates) {
        const existing = byOrder.get(c.orderId);
        if (existing) outcomes.set(c.orderId, classifyIssue(c, c.id, existing));
        else collided.push(c);
      }
      if (collided.length > 0) logger.warn({ count: collided.length, attempt }, "voucher code collision; retrying with new codes");
      pending = collided;
    }
    return requests.map((r) => outcomes.get(r.orderId)!);
  }

  /**
   * Runs fn (the item's answer and its log line) in the item's "voucher.issue"
   * span: a child of the traceparent the request carried (the outbox row's,
   * so MarkOrderSent's trace), else of the call's span. It starts when the
   * item's database round began, as the round is shared by the whole batch.
   */
  function inIssueSpan<T>(traceparent: string | undefined, orderId: string, outcome: IssueOutcome, startTime: number, fn: () => T): T {
    return withChildSpan(
      "voucher.issue",
      traceparent,
      (span) => {
        span.setAttributes({
          "order.id": orderId,
          "voucher.outcome": outcome.kind,
          "voucher.created": outcome.kind === "created",
          "voucher.id": outcome.kind === "conflict" ? outcome.existing.id : outcome.voucher.id,
        });
        if (outcome.kind === "conflict") span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.message });
        return fn();
      },
      { startTime },
    );
  }

  function logConflict(request: IssueRequest, existing: Voucher, message: string) {
    logger.warn(
      {
        orderId: request.orderId,
        voucherId: existing.id,
        customerId: request.customerId,
        existingCustomerId: existing.customerId,
        orderTotalCents: request.orderTotalCents,
        existingOrderTotalCents: existing.orderTotalCents,
      },
      `issue refused: ${message}`,
    );
  }

  return {
    /** IssueVoucher: the voucher and whether this call created it; ALREADY_EXISTS for a conflicting replay. */
    async issueOne(raw: RawIssueRequest): Promise<{ voucher: Voucher; created: boolean }> {
      const v = validateIssueRequest(raw);
      if (!v.ok) throw v.error;
      const started = Date.now();
      const [outcome] = await issue([v.value]);
      return inIssueSpan(raw.traceparent, v.value.orderId, outcome!, started, () => {
        switch (outcome!.kind) {
          case "created":
            logger.info({ orderId: v.value.orderId, voucherId: outcome!.voucher.id }, "voucher issued");
            return { voucher: outcome!.voucher, created: true };
          case "replayed":
            logger.info({ orderId: v.value.orderId, voucherId: outcome!.voucher.id }, "voucher already issued; returning it (replay)");
            return { voucher: outcome!.voucher, created: false };
          case "conflict":
            logConflict(v.value, outcome!.existing, outcome!.message);
            throw alreadyExists(outcome!.message);
        }
      });
    },

    /** BatchIssueVouchers: every item answered on its own, in request order; only the batch's shape fails the whole call. */
    async issueBatch(items: RawIssueRequest[]): Promise<BatchItemResult[]> {
      checkBatchShape(
        items.map((i) => i.orderId),
        maxBatch,
      );
      const validated = items.map(validateIssueRequest);
      const valid = validated.flatMap((v) => (v.ok ? [v.value] : []));
      const outcomes = new Map<string, IssueOutcome>();
      const started = Date.now();
      if (valid.length > 0) {
        const issued = await issue(valid);
        valid.forEach((r, i) => outcomes.set(r.orderId, issued[i]!));
      }
      const counts = { created: 0, replayed: 0, conflict: 0, invalid: 0 };
      const results = items.map((item, i): BatchItemResult => {
        const v = validated[i]!;
        if (!v.ok) {
          counts.invalid++;
          logger.info({ index: i, orderId: item.orderId }, `batch item refused: ${v.error.message}`);
          return { orderId: item.orderId, error: v.error };
        }
        const outcome = outcomes.get(v.value.orderId)!;
        counts[outcome.kind]++;
        return inIssueSpan(item.traceparent, v.value.orderId, outcome, started, (): BatchItemResult => {
          if (outcome.kind === "conflict") {
            logConflict(v.value, outcome.existing, outcome.message);
            return { orderId: item.orderId, error: alreadyExists(outcome.message) };
          }
          logger.debug({ orderId: item.orderId, voucherId: outcome.voucher.id, outcome: outcome.kind }, "batch item answered");
          return { orderId: item.orderId, voucher: outcome.voucher, created: outcome.kind === "created" };
        });
      });
      logger.info({ items: items.length, ...counts }, `batch issued ${counts.created} voucher(s)`);
      return results;
    },

    async get(voucherId: string): Promise<Voucher> {
      const id = requireId("voucher_id", voucherId);
      const voucher = await store.findById(id);
      if (!voucher) throw notFound(`voucher ${id} not found`);
      return voucher;
    },

    /** A customer's vouchers, newest first. */
    async listByCustomer(customerId: string, requestedPageSize: number, pageToken: string): Promise<Page<Voucher>> {
      const customer = requireId("customer_id", customerId);
      const size = pageSize(requestedPageSize, 50, 500);
      const beforeId = decodeIdToken(pageToken);
      // One extra row says whether another page exists, so the last page has no token.
      const rows = await store.listByCustomer(customer, beforeId, size + 1);
      const items = rows.slice(0, size);
      return { items, nextPageToken: rows.length > size ? encodeIdToken(items[items.length - 1]!.id) : "" };
    },

    /** Vouchers of the given orders; orders without one are absent. Results follow the request's order. */
    async getByOrders(orderIds: string[]): Promise<Voucher[]> {
      const ids = orderIdsToLookUp(orderIds);
      const found = new Map((await store.findByOrderIds(ids)).map((v) => [v.orderId, v]));
      return ids.flatMap((id) => (found.has(id) ? [found.get(id)!] : []));
    },

    /** Vouchers issued in [after, before), voided ones included, ascending by (issued_at, id). */
    async listIssued(after: Date | undefined, before: Date | undefined, requestedPageSize: number, pageToken: string): Promise<Page<Voucher>> {
      const window = timeWindow("issued", after, before);
      const size = pageSize(requestedPageSize, 1000, 5000);
      const from = decodeTimeToken(pageToken);
      const rows = await store.listIssued({ ...window, from, limit: size + 1 });
      const items = rows.slice(0, size);
      const last = items[items.length - 1];
      return { items, nextPageToken: rows.length > size && last ? encodeTimeToken(last.issuedAt, last.id) : "" };
    },

    /** Voids a voucher; voiding a voided one changes nothing (changed=false) and keeps the first reason. */
    async void(voucherId: string, reason: string): Promise<{ voucher: Voucher; changed: boolean }> {
      const id = requireId("voucher_id", voucherId);
      const why = voidReason(reason);
      const changed = await retryTransient(() => store.void(id, why), deadlockAttempts);
      const voucher = await store.findById(id);
      if (!voucher) throw notFound(`voucher ${id} not found`);
      if (changed) logger.info({ voucherId: id, orderId: voucher.orderId, reason: why }, "voucher voided");
      else logger.info({ voucherId: id, orderId: voucher.orderId }, "voucher already voided; unchanged");
      return { voucher, changed };
    },
  };
}

export type Vouchers = ReturnType<typeof createVouchers>;
