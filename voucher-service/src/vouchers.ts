import { retryTransient } from "@shop/platform/db";
import { alreadyExists, notFound, type DomainError } from "@shop/platform/errors";
import { newId } from "@shop/platform/ids";
import type { Logger } from "@shop/platform/logger";
import { SpanStatusCode, withChildSpan } from "@shop/platform/tracing";
import type { VoucherStore } from "./db/voucher-store.js";
import {
  classifyIssue,
  newVoucherCode,
  voucherToShow,
  type IssueOutcome,
  type IssueRequest,
  type Voucher,
  type VoucherCandidate,
} from "./domain/voucher.js";
import { checkBatchShape, pageSize, toIssueRequest, type RawIssueRequest } from "./domain/validation.js";
import { decodeIdToken, decodeTimeToken, encodeIdToken, encodeTimeToken, timeWindow } from "@shop/platform/paging";

export interface VouchersDeps {
  store: VoucherStore;
  logger: Logger;
  /** Items per BatchIssueVouchers call. Default 1000, the proto's documented maximum. */
  maxBatch?: number;
  /** Code generator; tests replace it to force a code collision. Default: 80 random bits. */
  newCode?: () => string;
  /**
   * Rounds of insert and read-back for orders left without a live voucher by
   * a code collision or a void landing in between. Default 5: a collision
   * has odds ~2^-80 per item and round.
   */
  maxCodeAttempts?: number;
  /** Deadlock retries per statement. Default 10: racing duplicate inserts on one key deadlock now and then under load. */
  deadlockAttempts?: number;
}

/**
 * A successful issue: the order's live voucher; created when this call made
 * it, and then reissued when the order's earlier vouchers were all voided.
 */
export interface IssueAnswer {
  voucher: Voucher;
  created: boolean;
  reissued: boolean;
}

/** One batch item: a request, or the refusal IssueVoucher would have given it (the handler checks each item against the proto's rules). */
export type BatchItem = RawIssueRequest | { orderId: string; refused: DomainError };

/** One batch item's answer: an outcome, or the refusal IssueVoucher would have given it. */
export type BatchItemResult = { orderId: string } & (IssueAnswer | { error: DomainError });

export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

/**
 * The voucher service's operations on plain values: the exactly-once issue
 * protocol, the rules a proto cannot express, and logging of every outcome.
 * Requests come checked against their proto's rules (by the servers, and by
 * the handler for batch items); transport mapping lives in grpc/routes.ts.
 */
export function createVouchers(deps: VouchersDeps) {
  const { store, logger } = deps;
  const maxBatch = deps.maxBatch ?? 1000;
  const newCode = deps.newCode ?? newVoucherCode;
  const maxCodeAttempts = deps.maxCodeAttempts ?? 5;
  const deadlockAttempts = deps.deadlockAttempts ?? 10;

  /**
   * One upsert for all requests, one read back by order_id, and the order's
   * live voucher decides each outcome (see classifyIssue). An order left with
   * no live voucher is explained before anything is retried:
   * - our row went in and was voided before the read: it is still ours
   *   (created), and issuing again would fight whoever voided it;
   * - its fresh code (or id) is held by another row: a code collision, the
   *   order goes again with a new code;
   * - it has voided vouchers only: the live one that refused our insert was
   *   voided meanwhile, so the order goes again and gets a new live voucher;
   * - none of these (no row of its own, keys free): the database answered
   *   something this code cannot explain, e.g. ids compared without case;
   *   that is an error at once, not a collision retried until it gives up.
   * Retrying is safe because the upsert writes nothing for an order that
   * has a live voucher, including our own earlier try.
   */
  async function issue(requests: IssueRequest[]): Promise<IssueOutcome[]> {
    const outcomes = new Map<string, IssueOutcome>();
    let pending = requests;
    let lastRound = "";
    for (let attempt = 1; pending.length > 0; attempt++) {
      if (attempt > maxCodeAttempts) {
        throw new Error(`${lastRound} after ${maxCodeAttempts} attempts for ${pending.length} order(s)`);
      }
      const candidates = pending.map((r) => ({ ...r, id: newId(), code: newCode() }));
      await retryTransient(() => store.insertIgnoringDuplicates(candidates), deadlockAttempts);
      const rows = await retryTransient(() => store.findByOrderIds(pending.map((r) => r.orderId)), deadlockAttempts);
      const byOrder = groupByOrder(rows);
      const unexplained: VoucherCandidate[] = [];
      for (const c of candidates) {
        const own = byOrder.get(c.orderId) ?? [];
        const outcome = classifyIssue(c, c.id, own);
        const ours = own.find((v) => v.id === c.id);
        if (outcome) outcomes.set(c.orderId, outcome);
        else if (ours) outcomes.set(c.orderId, { kind: "created", voucher: ours });
        else unexplained.push(c);
      }
      pending = [];
      if (unexplained.length === 0) continue;

      const taken = await retryTransient(
        () => store.findByIdsOrCodes(unexplained.map((c) => c.id), unexplained.map((c) => c.code)),
        deadlockAttempts,
      );
      const takenIds = new Set(taken.map((v) => v.id));
      const takenCodes = new Set(taken.map((v) => v.code));
      const collided: VoucherCandidate[] = [];
      const voidedMeanwhile: VoucherCandidate[] = [];
      const inexplicable: VoucherCandidate[] = [];
      for (const c of unexplained) {
        if (takenIds.has(c.id) || takenCodes.has(c.code)) collided.push(c);
        else if (byOrder.has(c.orderId)) voidedMeanwhile.push(c);
        else inexplicable.push(c);
      }
      if (inexplicable.length > 0) {
        for (const c of inexplicable) {
          logger.error(
            { orderId: c.orderId, candidateId: c.id },
            "voucher for order was neither inserted nor found: no live voucher of its own, its code and id free; not retried",
          );
        }
        throw new Error(
          `voucher for order ${inexplicable[0]!.orderId} was neither inserted nor found (${inexplicable.length} order(s)); ` +
            "the database refused the insert on a key this order does not hold",
        );
      }
      if (collided.length > 0) logger.warn({ count: collided.length, attempt }, "voucher code collision; retrying with new codes");
      if (voidedMeanwhile.length > 0) {
        logger.info(
          { orderIds: voidedMeanwhile.map((c) => c.orderId), attempt },
          "live voucher voided while issuing; issuing again",
        );
      }
      lastRound = collided.length > 0 ? "no free voucher code" : "live voucher voided while issuing each time";
      pending = [...collided, ...voidedMeanwhile];
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
          "voucher.created": outcome.kind === "created" || outcome.kind === "reissued",
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

  function logReissue(orderId: string, outcome: Extract<IssueOutcome, { kind: "reissued" }>) {
    logger.info(
      { orderId, voucherId: outcome.voucher.id, voidedVoucherIds: outcome.voided.map((v) => v.id) },
      "voucher reissued after void",
    );
  }

  return {
    /** IssueVoucher: the order's live voucher and whether this call created it; ALREADY_EXISTS for a conflicting replay. */
    async issueOne(raw: RawIssueRequest): Promise<IssueAnswer> {
      const request = toIssueRequest(raw);
      const started = Date.now();
      const [outcome] = await issue([request]);
      return inIssueSpan(raw.traceparent, request.orderId, outcome!, started, () => {
        switch (outcome!.kind) {
          case "created":
            logger.info({ orderId: request.orderId, voucherId: outcome!.voucher.id }, "voucher issued");
            return { voucher: outcome!.voucher, created: true, reissued: false };
          case "reissued":
            logReissue(request.orderId, outcome!);
            return { voucher: outcome!.voucher, created: true, reissued: true };
          case "replayed":
            logger.info({ orderId: request.orderId, voucherId: outcome!.voucher.id }, "voucher already issued; returning it (replay)");
            return { voucher: outcome!.voucher, created: false, reissued: false };
          case "conflict":
            logConflict(request, outcome!.existing, outcome!.message);
            throw alreadyExists(outcome!.message);
        }
      });
    },

    /** BatchIssueVouchers: every item answered on its own, in request order; only the batch's shape fails the whole call. */
    async issueBatch(items: BatchItem[]): Promise<BatchItemResult[]> {
      checkBatchShape(
        items.map((i) => i.orderId),
        maxBatch,
      );
      const requests = items.map((item) => ("refused" in item ? undefined : toIssueRequest(item)));
      const valid = requests.filter((r): r is IssueRequest => r !== undefined);
      const outcomes = new Map<string, IssueOutcome>();
      const started = Date.now();
      if (valid.length > 0) {
        const issued = await issue(valid);
        valid.forEach((r, i) => outcomes.set(r.orderId, issued[i]!));
      }
      const counts = { created: 0, reissued: 0, replayed: 0, conflict: 0, invalid: 0 };
      const results = items.map((item, i): BatchItemResult => {
        if ("refused" in item) {
          counts.invalid++;
          logger.info({ index: i, orderId: item.orderId }, `batch item refused: ${item.refused.message}`);
          return { orderId: item.orderId, error: item.refused };
        }
        const request = requests[i]!;
        const outcome = outcomes.get(request.orderId)!;
        counts[outcome.kind]++;
        return inIssueSpan(item.traceparent, request.orderId, outcome, started, (): BatchItemResult => {
          if (outcome.kind === "conflict") {
            logConflict(request, outcome.existing, outcome.message);
            return { orderId: item.orderId, error: alreadyExists(outcome.message) };
          }
          if (outcome.kind === "reissued") logReissue(item.orderId, outcome);
          else logger.debug({ orderId: item.orderId, voucherId: outcome.voucher.id, outcome: outcome.kind }, "batch item answered");
          const created = outcome.kind === "created" || outcome.kind === "reissued";
          return { orderId: item.orderId, voucher: outcome.voucher, created, reissued: outcome.kind === "reissued" };
        });
      });
      logger.info({ items: items.length, ...counts }, `batch issued ${counts.created + counts.reissued} voucher(s)`);
      return results;
    },

    async get(voucherId: string): Promise<Voucher> {
      const voucher = await store.findById(voucherId);
      if (!voucher) throw notFound(`voucher ${voucherId} not found`);
      return voucher;
    },

    /** A customer's vouchers, newest first. */
    async listByCustomer(customerId: string, requestedPageSize: number, pageToken: string): Promise<Page<Voucher>> {
      const size = pageSize(requestedPageSize, 50, 500);
      const beforeId = decodeIdToken(pageToken);
      // One extra row says whether another page exists, so the last page has no token.
      const rows = await store.listByCustomer(customerId, beforeId, size + 1);
      const items = rows.slice(0, size);
      return { items, nextPageToken: rows.length > size ? encodeIdToken(items[items.length - 1]!.id) : "" };
    },

    /**
     * One voucher per given order that has any (see voucherToShow: the live
     * one, else the most recently voided); orders without one are absent.
     * Results follow the request's order.
     */
    async getByOrders(orderIds: string[]): Promise<Voucher[]> {
      const ids = [...new Set(orderIds)];
      const byOrder = groupByOrder(await store.findByOrderIds(ids));
      return ids.flatMap((id) => {
        const shown = voucherToShow(byOrder.get(id) ?? []);
        return shown ? [shown] : [];
      });
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
    async void(id: string, why: string): Promise<{ voucher: Voucher; changed: boolean }> {
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

/** Rows by their exact order id: a row the database matched some other way (say, without case) is not that order's. */
function groupByOrder(rows: Voucher[]): Map<string, Voucher[]> {
  const byOrder = new Map<string, Voucher[]>();
  for (const v of rows) {
    const list = byOrder.get(v.orderId);
    if (list) list.push(v);
    else byOrder.set(v.orderId, [v]);
  }
  return byOrder;
}
