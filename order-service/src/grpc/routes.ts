import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { requireCustomer } from "@shop/platform/auth";
import { DomainError, notFound } from "@shop/platform/errors";
import { failpoint } from "@shop/platform/failpoints";
import type { Logger } from "@shop/platform/logger";
import {
  OrderService,
  OrderStatus as ProtoOrderStatus,
  PaymentMethod as ProtoPaymentMethod,
  PaymentStatus as ProtoPaymentStatus,
  SentBy as ProtoSentBy,
  ShippingStatus as ProtoShippingStatus,
  VoucherStatus as ProtoVoucherStatus,
  type OrderSchema,
} from "@shop/sdk/order";
import {
  ORDER_CURRENCY,
  type NewOrder,
  type OrderStatus,
  type PaymentMethod,
  type PaymentStatus,
  type SentBy,
  type ShippingStatus,
} from "../domain/order.js";
import type { VoucherStatus } from "../domain/voucher-state.js";
import { decodeIdToken, decodeTimeToken, encodeIdToken, encodeTimeToken, timeWindow } from "@shop/platform/paging";
import { LIST_ORDERS_PAGE, LIST_SENT_ORDERS_PAGE, pageSize } from "../domain/page-size.js";
import type { OrderStore, OrderView } from "../db/order-store.js";

export interface OrderServiceDeps {
  store: OrderStore;
  logger: Logger;
}

const ORDER_STATUS: Record<OrderStatus, ProtoOrderStatus> = {
  PENDING: ProtoOrderStatus.PENDING,
  SENT: ProtoOrderStatus.SENT,
  DELIVERED: ProtoOrderStatus.DELIVERED,
  CANCELLED: ProtoOrderStatus.CANCELLED,
  AWAITING_PAYMENT: ProtoOrderStatus.AWAITING_PAYMENT,
  PAID: ProtoOrderStatus.PAID,
  PAYMENT_FAILED: ProtoOrderStatus.PAYMENT_FAILED,
};

const PAYMENT_METHOD: Record<PaymentMethod, ProtoPaymentMethod> = {
  NONE: ProtoPaymentMethod.UNSPECIFIED,
  ACCOUNT: ProtoPaymentMethod.ACCOUNT,
};

export const PAYMENT_STATUS: Record<PaymentStatus, ProtoPaymentStatus> = {
  NONE: ProtoPaymentStatus.NONE,
  AWAITING: ProtoPaymentStatus.AWAITING,
  CHARGED: ProtoPaymentStatus.CHARGED,
  REFUSED: ProtoPaymentStatus.REFUSED,
  REFUND_PENDING: ProtoPaymentStatus.REFUND_PENDING,
  REFUNDED: ProtoPaymentStatus.REFUNDED,
};

const PAYMENT_STATUS_OF = new Map(Object.entries(PAYMENT_STATUS).map(([k, v]) => [v, k as PaymentStatus]));

export const SHIPPING_STATUS: Record<ShippingStatus, ProtoShippingStatus> = {
  NONE: ProtoShippingStatus.NONE,
  REQUESTED: ProtoShippingStatus.REQUESTED,
  SHIPPED: ProtoShippingStatus.SHIPPED,
  DELIVERED: ProtoShippingStatus.DELIVERED,
  DECLINED: ProtoShippingStatus.DECLINED,
};

const SHIPPING_STATUS_OF = new Map(Object.entries(SHIPPING_STATUS).map(([k, v]) => [v, k as ShippingStatus]));

const SENT_BY: Record<SentBy, ProtoSentBy> = {
  HAND: ProtoSentBy.HAND,
  SHIPMENT: ProtoSentBy.SHIPMENT,
};

const VOUCHER_STATUS: Record<VoucherStatus, ProtoVoucherStatus> = {
  NOT_ELIGIBLE: ProtoVoucherStatus.NOT_ELIGIBLE,
  PENDING: ProtoVoucherStatus.PENDING,
  ISSUED: ProtoVoucherStatus.ISSUED,
  DEAD: ProtoVoucherStatus.DEAD,
};

const ts = (d: Date | null): Timestamp | undefined => (d ? timestampFromDate(d) : undefined);

export function toProtoOrder(o: OrderView): MessageInitShape<typeof OrderSchema> {
  return {
    id: o.id,
    customerId: o.customerId,
    totalCents: BigInt(o.totalCents),
    currency: o.currency,
    status: ORDER_STATUS[o.status],
    createdAt: ts(o.createdAt),
    updatedAt: ts(o.updatedAt),
    sentAt: ts(o.sentAt),
    deliveredAt: ts(o.deliveredAt),
    cancelledAt: ts(o.cancelledAt),
    voucher: {
      status: VOUCHER_STATUS[o.voucher.status],
      voucherId: o.voucher.voucherId ?? "",
      lastError: o.voucher.lastError ?? "",
      attempts: o.voucher.attempts,
    },
    payment: {
      method: PAYMENT_METHOD[o.paymentMethod],
      status: PAYMENT_STATUS[o.paymentStatus],
      refusalReason: o.paymentReason ?? "",
      chargedAt: ts(o.chargedAt),
      refundedAt: ts(o.refundedAt),
    },
    shipping: {
      status: SHIPPING_STATUS[o.shippingStatus],
      carrier: o.carrier ?? "",
      requestedAt: ts(o.shippingRequestedAt),
      declineReason: o.shippingDeclineReason ?? "",
    },
    sentBy: o.sentBy ? SENT_BY[o.sentBy] : ProtoSentBy.UNSPECIFIED,
  };
}

const dateOf = (t: Timestamp | undefined): Date | undefined => (t ? timestampDate(t) : undefined);

/**
 * The OrderService handlers: proto ↔ domain mapping only. Every request has
 * passed its proto's rules before it gets here (ids, totals, currency, page
 * sizes, the window's order: see the servers' validation), so a handler reads
 * its fields as they are. Transitions live in the domain, SQL in the store;
 * refusals are DomainErrors that the server turns into statuses and logs.
 * Unexpected failures are logged here once more with the order they concern.
 */
export function createOrderServiceImpl({ store, logger }: OrderServiceDeps): ServiceImpl<typeof OrderService> {
  async function forOrder<T>(rpc: string, orderId: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof DomainError)) logger.error({ rpc, orderId, err }, `${rpc} failed for order ${orderId}`);
      throw err;
    }
  }

  return {
    async createOrder(req) {
      // The rules hold total_cents to 1..10^10 (exact as a number) and currency to "EUR".
      // The rules hold payment_method to UNSPECIFIED (no payment) or ACCOUNT.
      const input: NewOrder = {
        customerId: req.customerId,
        totalCents: Number(req.totalCents),
        currency: ORDER_CURRENCY,
        requestId: req.requestId,
        paymentMethod: req.paymentMethod === ProtoPaymentMethod.ACCOUNT ? "ACCOUNT" : "NONE",
        // The rules hold carrier to a-z 0-9 - (at most 32); empty: the delivery service's default.
        carrier: req.carrier || undefined,
      };
      try {
        const { order, created } = await store.create(input);
        return { order: toProtoOrder(order), created };
      } catch (err) {
        if (!(err instanceof DomainError)) logger.error({ rpc: "CreateOrder", requestId: input.requestId, err }, `CreateOrder failed for request_id ${input.requestId}`);
        throw err;
      }
    },

    async getOrder(req, ctx) {
      const { orderId } = req;
      return forOrder("GetOrder", orderId, async () => {
        const order = await store.get(orderId);
        if (!order) throw notFound(`order ${orderId} not found`);
        requireCustomer(ctx, order.customerId, `order ${orderId}`);
        return { order: toProtoOrder(order) };
      });
    },

    async listOrders(req, ctx) {
      const { customerId } = req;
      requireCustomer(ctx, customerId, `the orders of customer ${customerId}`);
      const limit = pageSize(req.pageSize, LIST_ORDERS_PAGE);
      const beforeId = decodeIdToken(req.pageToken);
      // One row past the page says whether another page exists, so the last page carries no token.
      const rows = await store.listByCustomer(customerId, beforeId, limit + 1);
      const page = rows.slice(0, limit);
      return {
        orders: page.map(toProtoOrder),
        nextPageToken: rows.length > limit ? encodeIdToken(page[page.length - 1]!.id) : "",
      };
    },

    async markOrderSent(req) {
      const { orderId } = req;
      return forOrder("MarkOrderSent", orderId, async () => {
        const { order, changed } = await store.markSent(orderId);
        failpoint("order.mark-sent.before-reply");
        return { order: toProtoOrder(order), changed };
      });
    },

    async markOrderDelivered(req) {
      const { orderId } = req;
      return forOrder("MarkOrderDelivered", orderId, async () => {
        const { order, changed } = await store.markDelivered(orderId);
        return { order: toProtoOrder(order), changed };
      });
    },

    async cancelOrder(req) {
      const { orderId } = req;
      return forOrder("CancelOrder", orderId, async () => {
        const { order, changed } = await store.cancel(orderId);
        return { order: toProtoOrder(order), changed };
      });
    },

    async listSentOrders(req) {
      const window = timeWindow("sent", dateOf(req.sentAfter), dateOf(req.sentBefore));
      const limit = pageSize(req.pageSize, LIST_SENT_ORDERS_PAGE);
      const from = decodeTimeToken(req.pageToken);
      const rows = await store.listSent({ ...window, from, limit: limit + 1 });
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      return {
        orders: page.map(toProtoOrder),
        nextPageToken: rows.length > limit && last ? encodeTimeToken(last.sentAt!, last.id) : "",
      };
    },

    async batchGetOrders(req) {
      const ids = [...new Set(req.orderIds)];
      const orders = await store.getMany(ids);
      return { orders: orders.map(toProtoOrder) };
    },

    async requeueVoucher(req) {
      const { orderId } = req;
      return forOrder("RequeueVoucher", orderId, async () => {
        const { order, requeued } = await store.requeueVoucher(orderId, req.redeliver);
        return { order: toProtoOrder(order), requeued };
      });
    },

    async requeuePayment(req) {
      const { orderId } = req;
      return forOrder("RequeuePayment", orderId, async () => {
        const { order, requeued } = await store.requeuePayment(orderId);
        return { order: toProtoOrder(order), requeued };
      });
    },

    async listOrdersByPaymentStatus(req) {
      // The rules hold payment_status to NONE..REFUNDED.
      const paymentStatus = PAYMENT_STATUS_OF.get(req.paymentStatus)!;
      const limit = pageSize(req.pageSize, LIST_SENT_ORDERS_PAGE);
      const from = decodeTimeToken(req.pageToken);
      const rows = await store.listByPaymentStatus({ paymentStatus, createdBefore: dateOf(req.createdBefore), from, limit: limit + 1 });
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      return {
        orders: page.map(toProtoOrder),
        nextPageToken: rows.length > limit && last ? encodeTimeToken(last.createdAt, last.id) : "",
      };
    },

    async releaseOrderForShipping(req) {
      const { orderId } = req;
      return forOrder("ReleaseOrderForShipping", orderId, async () => {
        const { order, changed } = await store.releaseForShipping(orderId, req.carrier || undefined);
        return { order: toProtoOrder(order), changed };
      });
    },

    async requeueShipment(req) {
      const { orderId } = req;
      return forOrder("RequeueShipment", orderId, async () => {
        const { order, requeued } = await store.requeueShipment(orderId);
        return { order: toProtoOrder(order), requeued };
      });
    },

    async listOrdersByShippingStatus(req) {
      // The rules hold shipping_status to REQUESTED..DECLINED.
      const shippingStatus = SHIPPING_STATUS_OF.get(req.shippingStatus) as Exclude<ShippingStatus, "NONE">;
      const limit = pageSize(req.pageSize, LIST_SENT_ORDERS_PAGE);
      const from = decodeTimeToken(req.pageToken);
      const rows = await store.listByShippingStatus({ shippingStatus, requestedBefore: dateOf(req.requestedBefore), from, limit: limit + 1 });
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      return {
        orders: page.map(toProtoOrder),
        nextPageToken: rows.length > limit && last ? encodeTimeToken(last.shippingRequestedAt!, last.id) : "",
      };
    },
  };
}
