import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type ServiceImpl } from "@connectrpc/connect";
import { requireCustomer } from "@shop/platform/auth";
import { invalidArgument, toConnectError } from "@shop/platform/errors";
import { failpoint } from "@shop/platform/failpoints";
import { checkRequest } from "@shop/platform/validation";
import {
  VoucherSchema,
  VoucherService,
  VoucherStatus,
  type IssueVoucherRequest,
  type Voucher as VoucherMessage,
} from "@shop/sdk/voucher";
import type { Voucher } from "../domain/voucher.js";
import type { RawIssueRequest } from "../domain/validation.js";
import type { BatchItem, IssueAnswer, Vouchers } from "../vouchers.js";
import { refusalResult, type IssueResult } from "../metrics.js";

export interface VoucherServiceDeps {
  vouchers: Vouchers;
  /** Counts issue outcomes (vouchers_issued_total). Default: not counted. */
  issued?: { inc(labels: { result: IssueResult }, value?: number): void };
}

export function toVoucherMessage(v: Voucher): VoucherMessage {
  return create(VoucherSchema, {
    id: v.id,
    code: v.code,
    orderId: v.orderId,
    customerId: v.customerId,
    amountCents: BigInt(v.amountCents),
    currency: v.currency,
    status: v.status === "VOIDED" ? VoucherStatus.VOIDED : VoucherStatus.ISSUED,
    issuedAt: timestampFromDate(v.issuedAt),
    orderTotalCents: BigInt(v.orderTotalCents),
    voidedAt: v.voidedAt ? timestampFromDate(v.voidedAt) : undefined,
    voidReason: v.voidReason ?? "",
  });
}

function fromIssueRequest(req: IssueVoucherRequest): RawIssueRequest {
  return {
    orderId: req.orderId,
    customerId: req.customerId,
    orderTotalCents: req.orderTotalCents,
    currency: req.currency,
    traceparent: req.traceparent,
  };
}

/**
 * A batch item checked against IssueVoucherRequest's rules, which the batch's
 * own rules leave out (IGNORE_ALWAYS) so that one bad item does not fail the
 * others: a bad one carries the refusal IssueVoucher would have answered.
 */
function batchItem(item: IssueVoucherRequest): BatchItem {
  try {
    checkRequest(VoucherService.method.issueVoucher.input, item);
  } catch (err) {
    // Rules that cannot be evaluated are our fault, and fail the whole call.
    if (!(err instanceof ConnectError) || err.code !== Code.InvalidArgument) throw err;
    return { orderId: item.orderId, refused: invalidArgument(err.rawMessage) };
  }
  return fromIssueRequest(item);
}

function resultOf(answer: IssueAnswer): IssueResult {
  return answer.reissued ? "reissued" : answer.created ? "created" : "replayed";
}

/** VoucherService handlers: proto in, plain values to `vouchers`, proto out. Errors are mapped by the server. */
export function createVoucherServiceImpl({ vouchers, issued }: VoucherServiceDeps): ServiceImpl<typeof VoucherService> {
  return {
    async issueVoucher(req) {
      let outcome;
      try {
        outcome = await vouchers.issueOne(fromIssueRequest(req));
      } catch (err) {
        const result = refusalResult(err);
        if (result) issued?.inc({ result });
        throw err;
      }
      const { voucher, created } = outcome;
      issued?.inc({ result: resultOf(outcome) });
      failpoint("voucher.issue.before-reply");
      return { voucher: toVoucherMessage(voucher), created };
    },

    async batchIssueVouchers(req) {
      const results = await vouchers.issueBatch(req.items.map(batchItem));
      if (issued) {
        const counts: Record<IssueResult, number> = { created: 0, reissued: 0, replayed: 0, conflict: 0, invalid: 0 };
        for (const r of results) {
          const result = "error" in r ? refusalResult(r.error) : resultOf(r);
          if (result) counts[result]++;
        }
        for (const [result, n] of Object.entries(counts)) if (n > 0) issued.inc({ result: result as IssueResult }, n);
      }
      failpoint("voucher.issue.before-reply");
      return {
        results: results.map((r) =>
          "error" in r
            ? { orderId: r.orderId, errorCode: toConnectError(r.error).code, errorMessage: r.error.message }
            : { orderId: r.orderId, voucher: toVoucherMessage(r.voucher), created: r.created },
        ),
      };
    },

    async getVoucher(req, ctx) {
      const voucher = await vouchers.get(req.voucherId);
      requireCustomer(ctx, voucher.customerId, `voucher ${voucher.id}`);
      return { voucher: toVoucherMessage(voucher) };
    },

    async listVouchers(req, ctx) {
      requireCustomer(ctx, req.customerId, `the vouchers of customer ${req.customerId}`);
      const page = await vouchers.listByCustomer(req.customerId, req.pageSize, req.pageToken);
      return { vouchers: page.items.map(toVoucherMessage), nextPageToken: page.nextPageToken };
    },

    async batchGetVouchersByOrder(req) {
      return { vouchers: (await vouchers.getByOrders(req.orderIds)).map(toVoucherMessage) };
    },

    async listIssuedVouchers(req) {
      const page = await vouchers.listIssued(
        req.issuedAfter ? timestampDate(req.issuedAfter) : undefined,
        req.issuedBefore ? timestampDate(req.issuedBefore) : undefined,
        req.pageSize,
        req.pageToken,
      );
      return { vouchers: page.items.map(toVoucherMessage), nextPageToken: page.nextPageToken };
    },

    async voidVoucher(req) {
      const { voucher, changed } = await vouchers.void(req.voucherId, req.reason);
      return { voucher: toVoucherMessage(voucher), changed };
    },
  };
}

/** For connect-es routers (e.g. createRouterTransport in tests). */
export function voucherRoutes(deps: VoucherServiceDeps) {
  return (router: ConnectRouter) => router.service(VoucherService, createVoucherServiceImpl(deps));
}
